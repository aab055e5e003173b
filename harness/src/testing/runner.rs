//! The runner `harness::main!()` calls: libtest's arguments, a trial per collected test, and the
//! shared topologies' lifetimes.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};

use super::__private::TESTS;
use super::case::{Runtime, TestCase, TopologyKey};
use super::report::{panic_message, with_log_tails};
use super::shared::{Origin, Shared};
use super::supervisor;
use super::topology::Topology;
use super::worker::{self, Workers};

pub use crate::orchestrator::BASE_DIR_ENV;

/// Runs the binary's `#[harness_test]`s with the command line's libtest arguments, and returns
/// the exit code for `main` (returned, not `exit`ed, so that destructors run).
pub fn run() -> ExitCode {
    run_suite(Runtime::None, || {})
}

/// Like [`run`], calling `setup` first unless the tests are only listed (what
/// `harness::main!(setup = f)` expands to): for building the programs the topologies start.
pub fn run_with_setup(setup: impl FnOnce()) -> ExitCode {
    run_suite(Runtime::None, setup)
}

/// Like [`run`], with the arguments given.
pub fn run_with_args(args: Arguments) -> ExitCode {
    crate::orchestrator::unless_ending(run_role_with_args(args))
}

/// [`run_with_args`] up to its exit code.
fn run_role_with_args(args: Arguments) -> ExitCode {
    super::log::init_tracing();
    raise_open_files_limit();
    // Every entry point checks the role first, so a binary with a `main` of its own that calls
    // only this one still serves as its topologies' supervisor.
    if let Some(code) = run_supervisor() {
        return code;
    }
    if let Some(code) = worker::run_if_worker(Runtime::None) {
        return code;
    }
    run_arguments(args, Runtime::None)
}

/// What `harness::main!()` runs: bodies on `runtime` unless a test names its own, `setup` first
/// unless the tests are only listed.
pub(crate) fn run_suite(runtime: Runtime, setup: impl FnOnce()) -> ExitCode {
    crate::orchestrator::unless_ending(run_role(runtime, setup))
}

/// [`run_suite`] up to its exit code.
fn run_role(runtime: Runtime, setup: impl FnOnce()) -> ExitCode {
    super::log::init_tracing();
    raise_open_files_limit();
    // A supervisor parses no arguments and needs no setup: the test that started it did it.
    if let Some(code) = run_supervisor() {
        return code;
    }
    // A worker runs the tests its runner sends: the runner ran the setup.
    if let Some(code) = worker::run_if_worker(runtime) {
        return code;
    }
    let args = Arguments::from_args();
    if !args.list {
        setup();
    }
    run_arguments(args, runtime)
}

/// Runs the selected tests: in workers, so that their output is captured, unless
/// `--nocapture`, or under nextest, which captures each test's process itself.
fn run_arguments(args: Arguments, runtime: Runtime) -> ExitCode {
    let cases: Vec<&'static TestCase> = TESTS.iter().collect();
    if cases.is_empty() && !args.list {
        eprintln!(
            "harness: this test binary has no #[harness_test]; plain #[test] functions do not \
             run in a `harness = false` target"
        );
    }
    let origin = match supervisor::nextest_run_id(&args) {
        Some(run_id) => Origin::Nextest(run_id),
        None => Origin::Here,
    };
    let capture = matches!(origin, Origin::Here) && worker::capture(&args);
    // Orphans the services leave come to us, to be removed once the tests are done.
    if let Err(e) = crate::exec::become_subreaper() {
        tracing::debug!("failed to become a child subreaper: {e}");
    }
    // A test ended by nextest's timeout (SIGTERM) or by Ctrl-C leaves no state directory and
    // no container.
    crate::orchestrator::remove_on_termination();
    let conclusion = run_cases(&args, cases, origin, runtime, capture);
    crate::exec::remove_descendants();
    conclusion.exit_code()
}

/// Raises the soft open-files limit to the hard one, so that a topology of hundreds of services
/// does not run out of descriptors at the usual soft limit of 1024 (see [`crate::limits`]).
fn raise_open_files_limit() {
    if let Err(e) = crate::limits::raise_open_files_limit() {
        tracing::warn!("failed to raise the soft limit of open files to the hard one: {e}");
    }
}

/// Runs the supervisor of a topology shared under nextest, if this process is one.
fn run_supervisor() -> Option<ExitCode> {
    std::env::var_os(supervisor::ROLE_ENV)?;
    let base_dir = base_dir();
    let mut shareds: Vec<Arc<Shared>> = Vec::new();
    for case in TESTS.iter() {
        if !shareds.iter().any(|s| s.key() == &case.topology_key()) {
            shareds.push(Arc::new(Shared::new(case, base_dir.clone(), Origin::Here)));
        }
    }
    supervisor::run_if_supervisor(&shareds)
}

/// The directory relative binaries are resolved against.
pub(crate) fn base_dir() -> PathBuf {
    crate::orchestrator::default_base_dir()
}

/// Runs `cases`, their shared copies from `origin`; with `capture`, each in a worker process
/// whose output is shown only when the test fails (`worker.rs`).
fn run_cases(
    args: &Arguments,
    mut cases: Vec<&'static TestCase>,
    origin: Origin,
    runtime: Runtime,
    capture: bool,
) -> Conclusion {
    cases.sort_by_cached_key(|c| c.test_name());
    let base_dir = base_dir();
    let mut shared: BTreeMap<TopologyKey, Arc<Shared>> = BTreeMap::new();
    for case in &cases {
        shared
            .entry(case.topology_key())
            .or_insert_with(|| Arc::new(Shared::new(case, base_dir.clone(), origin.clone())));
    }
    let workers = match capture {
        false => None,
        true => match Workers::new(shared.values(), args.show_output) {
            Ok(workers) => Some(Arc::new(workers)),
            Err(e) => {
                eprintln!("harness: {e}; the tests run in this process, their output not captured");
                None
            }
        },
    };
    let trials: Vec<Trial> = cases
        .iter()
        .map(|&case| {
            let topology = shared[&case.topology_key()].clone();
            let skip = skip_reason(case, args);
            let workers = workers.clone();
            Trial::ignorable_test(case.test_name(), move || match (skip, &workers) {
                (Some(reason), _) => Ok(Completion::ignored_with(reason)),
                (None, Some(workers)) => run_in_worker(workers, case, &topology),
                (None, None) => run_one(case, &topology, runtime).map(|()| Completion::Completed),
            })
            .with_ignored_flag(case.ignored && skip.is_none())
        })
        .collect();
    // Each shared topology stops after its last selected test: count them as libtest-mimic
    // will select them. Listing selects nothing, so nothing starts.
    let mut first_shared = None;
    let mut selected = 0;
    if !args.list {
        for (trial, case) in trials.iter().zip(&cases) {
            let runs = !args.is_filtered_out(trial)
                && !args.is_ignored(trial)
                && skip_reason(case, args).is_none();
            selected += usize::from(runs);
            if runs && !case.isolated {
                shared[&case.topology_key()].expect_test();
                first_shared.get_or_insert_with(|| shared[&case.topology_key()].clone());
            }
        }
    }
    if let Some(workers) = &workers {
        // Workers start while the first test's topology does, rather than before it.
        let threads = args.test_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        workers.prewarm(threads.min(selected), first_shared);
    }
    let conclusion = libtest_mimic::run(args, trials);
    if let Some(workers) = &workers {
        let json = matches!(args.format, Some(libtest_mimic::FormatSetting::Json));
        workers.finish(json);
    }
    // Normally every copy stopped after its last test; this is for what was left running.
    for topology in shared.values() {
        topology.shut_down();
    }
    conclusion
}

/// The reason an ignored test is skipped with, when it has one and ignored tests do not run.
///
/// libtest prints `test name ... ignored, reason`. libtest-mimic 0.8 shows no reason for a
/// test it skips by its ignored flag, only for one whose runner reports itself ignored (as
/// `ignored (reason)`). So such a test is flagged only when ignored tests are selected
/// (`--ignored`, `--include-ignored`, also for `--list --ignored`, which nextest asks), and
/// otherwise runs and reports itself ignored, before it touches its topology.
fn skip_reason(case: &TestCase, args: &Arguments) -> Option<&'static str> {
    let ignored_run = args.ignored || args.include_ignored;
    case.ignore_reason.filter(|_| case.ignored && !ignored_run)
}

/// Counts a test as done with its shared topology, also when it panics.
struct Release<'a>(&'a Shared);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Runs `case` in a worker; the shared copy is this process's, served to the worker.
fn run_in_worker(
    workers: &Workers,
    case: &TestCase,
    shared: &Shared,
) -> Result<Completion, Failed> {
    let _release = (!case.isolated).then(|| Release(shared));
    workers
        .run(case)
        .map(|()| Completion::Completed)
        .map_err(Failed::from)
}

fn run_one(case: &TestCase, shared: &Shared, default_runtime: Runtime) -> Result<(), Failed> {
    run_test(case, shared, default_runtime).map_err(Failed::from)
}

/// Runs `case` on its runtime (`default_runtime` unless it names one), with its copy of the
/// topology; `Err` with the failure's message.
pub(crate) fn run_test(
    case: &TestCase,
    shared: &Shared,
    default_runtime: Runtime,
) -> Result<(), String> {
    let _release = (!case.isolated).then(|| Release(shared));
    let topology = if case.isolated {
        shared.start_private()
    } else {
        shared.acquire()
    }?;
    let runtime = case.runtime.unwrap_or(default_runtime);
    let _named = super::unique::enter(&case.test_name());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(run_body(case, &topology)).and_then(|r| r)
    }))
    .unwrap_or_else(|payload| Err(panicked(&panic_message(&*payload), runtime)));
    let outcome = outcome.map_err(|message| with_log_tails(message, &topology));
    if case.isolated
        && let Err(e) = async_io::block_on(topology.shut_down())
    {
        eprintln!(
            "harness: stop the private copy of {}: {e}",
            topology.file().display()
        );
    }
    outcome
}

/// The failure of a body that panicked with `message`; a tokio client's "no reactor" panic under
/// another runtime says what to write.
fn panicked(message: &str, runtime: Runtime) -> String {
    let mut out = format!("test panicked: {message}");
    if runtime == Runtime::None && message.contains("must be called from the context of a Tokio") {
        out.push_str(
            "\n\nThe body uses tokio, and runs without a runtime: write \
             #[harness_test(topology = \"...\", runtime = \"tokio\")] or \
             harness::main!(runtime = \"tokio\"), with the `tokio` feature of harness \
             (harness = { ..., features = [\"tokio\"] })",
        );
    }
    out
}

/// The body, failed when it takes longer than the test's timeout.
async fn run_body(case: &TestCase, topology: &Topology) -> Result<(), String> {
    let body = (case.run)(topology);
    match case.timeout() {
        None => body.await,
        Some(limit) => {
            futures_lite::future::or(body, async {
                async_io::Timer::after(limit).await;
                Err(format!(
                    "the test did not finish within its timeout of {}",
                    crate::topology::format_duration(limit)
                ))
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::testing::case::{Source, TestFuture, test_case as case};

    const SLEEPER: &str =
        "services:\n  s:\n    target:\n      process: { binary: /bin/sleep, args: [\"300\"] }\n";
    const A: Source = Source {
        path: "/virtual/a.yaml",
        text: SLEEPER,
    };
    const B: Source = Source {
        path: "/virtual/b.yaml",
        text: SLEEPER,
    };
    const BROKEN: Source = Source {
        path: "/virtual/broken.yaml",
        text: "services:\n  s:\n    target:\n      process: { binary: /nonexistent/harness-test }\n",
    };

    /// The pid of topology A's service, seen by its first test.
    static A_PID: AtomicU32 = AtomicU32::new(0);

    fn pid_of_s(topology: &Topology) -> TestFuture<'_> {
        Box::pin(async move {
            let status = topology
                .manager()
                .status("s")
                .await
                .map_err(|e| e.to_string())?;
            A_PID.store(status.pid.ok_or("s has no pid")?, Ordering::SeqCst);
            Ok(())
        })
    }

    fn a_is_gone(_: &Topology) -> TestFuture<'_> {
        Box::pin(async move {
            let pid = A_PID.load(Ordering::SeqCst);
            // The pid may be reused in theory; a sleep 300 of ours at that pid is not.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            match pid != 0 && cmdline.starts_with(b"/bin/sleep") {
                true => Err(format!(
                    "topology A still runs (pid {pid}) after its last selected test"
                )),
                false => Ok(()),
            }
        })
    }

    fn never_runs(_: &Topology) -> TestFuture<'_> {
        Box::pin(async { Err("this test is filtered out".to_string()) })
    }

    #[test]
    fn a_topology_stops_after_its_last_selected_test() {
        // In name order, on one thread: a1 starts A, a2 is skipped (so a1 is A's last test), and
        // b1 runs after A must have stopped. If skipped tests were counted, A would still run.
        let cases = vec![
            case("a1", A, pid_of_s),
            case("a2_skipped", A, never_runs),
            case("b1", B, a_is_gone),
        ];
        let args = Arguments {
            skip: vec!["a2_skipped".into()],
            test_threads: Some(1),
            ..Arguments::default()
        };
        // Under nextest too, these share in this process: no supervisor.
        let conclusion = run_cases(&args, cases, Origin::Here, Runtime::None, false);
        assert_eq!(
            (
                conclusion.num_passed,
                conclusion.num_failed,
                conclusion.num_filtered_out
            ),
            (2, 0, 1)
        );
        assert_ne!(A_PID.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_ignored_test_with_a_reason_runs_only_when_ignored_tests_do() {
        let ignored = || {
            let case = case("ignored_with_reason", BROKEN, never_runs);
            let case = Box::leak(Box::new(TestCase {
                ignored: true,
                ignore_reason: Some("needs a GPU"),
                ..*case
            }));
            vec![&*case]
        };
        // Skipped by itself, before its (broken) topology is started.
        let conclusion = run_cases(
            &Arguments::default(),
            ignored(),
            Origin::Here,
            Runtime::None,
            false,
        );
        assert_eq!(
            (
                conclusion.num_passed,
                conclusion.num_failed,
                conclusion.num_ignored
            ),
            (0, 0, 1)
        );
        for args in [
            Arguments {
                ignored: true,
                ..Arguments::default()
            },
            Arguments {
                include_ignored: true,
                ..Arguments::default()
            },
        ] {
            let conclusion = run_cases(&args, ignored(), Origin::Here, Runtime::None, false);
            assert_eq!((conclusion.num_failed, conclusion.num_ignored), (1, 0));
        }
    }

    #[test]
    fn a_topology_that_cannot_start_fails_each_of_its_tests() {
        let cases = vec![
            case("c1", BROKEN, never_runs),
            case("c2", BROKEN, never_runs),
        ];
        let args = Arguments {
            test_threads: Some(2),
            ..Arguments::default()
        };
        // Under nextest too, these share in this process: no supervisor.
        let conclusion = run_cases(&args, cases, Origin::Here, Runtime::None, false);
        assert_eq!((conclusion.num_passed, conclusion.num_failed), (0, 2));
    }
}
