//! Sharing under nextest, from outside: `cargo nextest run` on the user_demo suite starts each
//! topology once for the whole run (in a supervisor process), every test passes, nextest sees
//! no leak, and afterwards no supervisor, no service and no state directory is left; the same
//! with `--partition`. A topology that cannot start is started once and fails each of its
//! tests with the same error. And a supervisor killed with SIGKILL takes its services with it, and
//! the next test elects a new one over what the dead one left.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/leftovers.rs"]
mod leftovers;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The variable each run gets, with a value of its own: every process the run starts
/// inherits it, which is how leftovers are found.
const TOKEN: &str = "HARNESS_NEXTEST_TEST_TOKEN";

/// The pids of the live processes whose environment has `TOKEN=token`.
fn processes_with(token: &str) -> Vec<u32> {
    fixtures::processes_with_env(TOKEN, token)
}

/// One run's token, state root, supervisor log and project directory; kills what the run
/// left (by its token) when dropped, so a failing test leaves nothing either.
struct Scene {
    token: String,
    tmp: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        Self {
            token: format!("{}-{}", std::process::id(), fastrand::u64(..)),
            tmp: tempfile::Builder::new()
                .prefix("harness-nextest-")
                .tempdir()
                .unwrap(),
            project: fixtures::project_dir(),
        }
    }

    fn state_root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn supervisor_log(&self) -> PathBuf {
        self.tmp.path().join("supervisor.log")
    }

    /// A command with the scene's environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("HARNESS_BASE_DIR", self.project.path())
            .env("HARNESS_STATE_DIR", self.state_root())
            .env("HARNESS_SUPERVISOR_LOG", self.supervisor_log())
            .env(TOKEN, &self.token)
            .env_remove("NEXTEST_RUN_ID")
            .env_remove("NEXTEST_TEST_NAME")
            .current_dir(fixtures::workspace_dir());
        command
    }

    /// How many times the supervisors logged `what` for each topology.
    fn count(&self, what: &str) -> BTreeMap<String, usize> {
        let log = std::fs::read_to_string(self.supervisor_log()).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in log.lines() {
            if let Some((_, topology)) = line.split_once(what) {
                *counts.entry(topology.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits until nothing of the run is left: no process, nothing in its state root (no
    /// supervisor directory, socket or lock).
    fn assert_nothing_left_soon(&self, limit: Duration) {
        leftovers::Leftovers::new(TOKEN, &self.token)
            .with_state_root(self.state_root())
            .with_log(self.supervisor_log())
            .assert_nothing_left(limit);
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for pid in processes_with(&self.token) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// `cargo nextest run` of the user_demo suite, with `args`.
fn nextest(scene: &Scene, args: &[&str]) -> Output {
    // --workspace, as CI's `cargo nextest run --workspace` builds, so nothing builds twice.
    scene
        .command(fixtures::cargo())
        .args(["nextest", "run", "--workspace", "--test", "user_demo"])
        .arg("--target-dir")
        .arg(fixtures::target_dir())
        .args(args)
        .output()
        .expect("run cargo nextest")
}

/// Checks a run: it passed, without leaks, each shared topology started exactly once, and
/// nothing is left soon after.
fn check_run(scene: &Scene, output: &Output) {
    let text = fixtures::both(output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("LEAK"), "nextest saw a leak:\n{text}");
    let starts = scene.count("started topology ");
    assert!(!starts.is_empty(), "no supervisor started:\n{text}");
    assert!(
        starts.values().all(|&n| n == 1),
        "a topology started more than once in one run: {starts:?}"
    );
    scene.assert_nothing_left_soon(Duration::from_secs(20));
}

#[test]
fn a_nextest_run_shares_each_topology_once_and_leaves_nothing() {
    let scene = Scene::new();
    let output = nextest(&scene, &[]);
    check_run(&scene, &output);
    // The plain demo, the demo with the overlay, and the restart test's topology.
    assert_eq!(
        scene.count("started topology ").len(),
        3,
        "{}",
        fixtures::both(&output)
    );
}

#[test]
fn a_partition_of_the_run_shares_too() {
    let scene = Scene::new();
    let output = nextest(&scene, &["--partition", "count:1/2"]);
    check_run(&scene, &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("PASS") || stderr.contains("PASS"),
        "{}",
        fixtures::both(&output)
    );
}

#[test]
fn a_topology_that_cannot_start_fails_its_tests_with_one_start_and_reports_log_tails() {
    let scene = Scene::new();
    let output = scene
        .command(fixtures::cargo())
        .args(["nextest", "run", "--workspace", "--test", "user_failing"])
        .args([
            "--no-fail-fast",
            "--failure-output",
            "final",
            "--target-dir",
        ])
        .arg(fixtures::target_dir())
        .env("HARNESS_FAILING_SUITE", "1")
        .output()
        .expect("run cargo nextest");
    let text = fixtures::both(&output);
    assert!(!output.status.success(), "{text}");
    assert!(!text.contains("LEAK"), "nextest saw a leak:\n{text}");
    // Both tests of the broken topology fail with its start error, started once.
    let attempts = scene.count("starting topology ");
    let failing: Vec<_> = attempts
        .iter()
        .filter(|(topology, _)| topology.ends_with("failing.yaml"))
        .collect();
    assert_eq!(failing.len(), 1, "{attempts:?}");
    assert_eq!(*failing[0].1, 1, "the broken topology was started again");
    for test in ["cannot_start::first", "cannot_start::second"] {
        let report = text
            .split(&format!("---- {test} ----"))
            .nth(1)
            .unwrap_or_else(|| panic!("no report of {test}:\n{text}"));
        assert!(
            report.contains("start service broken") && report.contains("failing-service:"),
            "{test} does not carry the start error with its log tail:\n{report}"
        );
    }
    // A failing test of a shared copy shows the services' output, read from the supervisor's
    // log files.
    let panics = text
        .split("---- panics ----")
        .nth(1)
        .unwrap_or_else(|| panic!("no report of panics:\n{text}"));
    assert!(
        panics.contains("last lines of each service") && panics.contains("echo-server: listening"),
        "{panics}"
    );
    scene.assert_nothing_left_soon(Duration::from_secs(20));
}

/// The user_demo test binary, built (if need be) into this target directory.
fn user_demo_binary() -> PathBuf {
    fixtures::test_binary("user_demo")
}

/// Runs one user_demo test as nextest would (`--exact NAME` with `NEXTEST_TEST_NAME=NAME`), in
/// run `run_id`.
fn run_one_test(scene: &Scene, run_id: &str, test: &str, idle: &str) {
    let output = scene
        .command(user_demo_binary())
        .args(["--exact", test])
        .env("NEXTEST_RUN_ID", run_id)
        .env("NEXTEST_TEST_NAME", test)
        .env("HARNESS_SUPERVISOR_IDLE", idle)
        .output()
        .expect("run user_demo");
    let text = fixtures::both(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn a_supervisor_killed_takes_its_services_with_it() {
    let scene = Scene::new();
    let run_id = format!("sigkill-{}", scene.token);
    // Two test processes of one run, one after the other: one supervisor, which outlives them
    // (its run, this process, goes on; its idle timeout is long).
    run_one_test(&scene, &run_id, "echo_answers_at_its_address", "300");
    run_one_test(&scene, &run_id, "web_is_healthy", "300");
    assert_eq!(
        scene.count("started topology ").values().sum::<usize>(),
        1,
        "the second test started the topology again"
    );
    let dirs: Vec<PathBuf> = std::fs::read_dir(scene.state_root().join("tests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let supervisor: u32 = std::fs::read_to_string(dirs[0].join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let services: Vec<u32> = processes_with(&scene.token)
        .into_iter()
        .filter(|&pid| pid != supervisor)
        .collect();
    assert!(!services.is_empty(), "the supervisor runs no service");

    let killed = Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(&scene.token);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after SIGKILL of supervisor {supervisor}, its services {left:?} still run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // What a supervisor of an earlier run left when it was killed: the next election removes
    // it. Its pid is that of a process that has ended.
    let mut ended = Command::new("true").spawn().unwrap();
    ended.wait().unwrap();
    let stale = scene
        .state_root()
        .join("tests")
        .join("earlier-run-0123456789abcdef");
    std::fs::create_dir_all(stale.join("services")).unwrap();
    std::fs::write(stale.join("supervisor.pid"), ended.id().to_string()).unwrap();
    std::fs::write(stale.join("lock"), "").unwrap();
    std::fs::write(stale.join("services/echo.log"), "echo-server: listening\n").unwrap();

    // The next test of the run finds the dead supervisor's socket, elects a new one, and that
    // one tears down soon after (a short idle timeout) and removes its directory.
    run_one_test(&scene, &run_id, "echo_answers_at_its_address", "0.5");
    assert_eq!(scene.count("started topology ").values().sum::<usize>(), 2);
    scene.assert_nothing_left_soon(Duration::from_secs(20));
}
