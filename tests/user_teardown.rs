//! Teardown guarantees from outside: the hanging suite (tests/user_hanging.rs) is killed in the
//! ways a real run can be, and afterwards nothing of it is left (tests/support/leftovers.rs:
//! processes, supervisors, sockets, state directories, containers, networks, images).
//!
//! - nextest's slow timeout ends a test of a shared copy and one of an isolated copy (SIGTERM,
//!   then SIGKILL after the grace period): nextest reports the timeouts, and soon after nothing
//!   is left.
//! - The suite binary run directly, as `cargo test` runs it, is killed with SIGKILL while its
//!   tests hang: its services are gone within 5 seconds, and the next run removes the state
//!   directories the killed one could not.
//! - The same with a container in the topology: the container outlives its killed owner, and
//!   the next run's janitor removes it, the run's network and its image. That run, ended with
//!   SIGTERM, removes its own before it ends.
//! - A suite with a shared and an isolated copy of that topology, both building its image,
//!   leaves no image.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/leftovers.rs"]
mod leftovers;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use leftovers::Leftovers;

/// The variable each scene's processes carry, with a value of its own.
const TOKEN: &str = "HARNESS_TEARDOWN_TEST_TOKEN";

/// How long the services of a killed run may take to go: the contract.
const SERVICES_GONE: Duration = Duration::from_secs(5);
/// How long the rest may take to go (a supervisor notices the end of the run within a poll;
/// containers take a moment to be removed).
const REST_GONE: Duration = Duration::from_secs(20);
/// How long a test waits for the suite's tests to reach their bodies.
const STARTED: Duration = Duration::from_secs(60);

/// One run of the hanging suite: its token, its own state root, temporary directory and
/// markers, and a project directory in which the topologies find the fixture programs. Kills
/// what is left of the run (by its token) when dropped, so a failing test leaves nothing
/// either.
struct Scene {
    token: String,
    tmp: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let scene = Self {
            token: format!("{}-{}", std::process::id(), fastrand::u64(..)),
            tmp: tempfile::Builder::new()
                .prefix("harness-teardown-")
                .tempdir()
                .unwrap(),
            project: fixtures::project_dir(),
        };
        for dir in ["state", "tmp", "markers"] {
            std::fs::create_dir(scene.tmp.path().join(dir)).unwrap();
        }
        scene
    }

    fn state_root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn temp_dir(&self) -> PathBuf {
        self.tmp.path().join("tmp")
    }

    fn markers(&self) -> PathBuf {
        self.tmp.path().join("markers")
    }

    fn supervisor_log(&self) -> PathBuf {
        self.tmp.path().join("supervisor.log")
    }

    /// Where this scene's leftovers would be.
    fn leftovers(&self) -> Leftovers {
        Leftovers::new(TOKEN, &self.token)
            .with_state_root(self.state_root())
            .with_temp_dir(self.temp_dir())
            .with_log(self.supervisor_log())
    }

    /// A command with the scene's environment, the hanging suite turned on.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("HARNESS_HANGING_SUITE", "1")
            .env("HARNESS_HANGING_MARKERS", self.markers())
            .env("HARNESS_BASE_DIR", self.project.path())
            .env("HARNESS_STATE_DIR", self.state_root())
            .env("HARNESS_SUPERVISOR_LOG", self.supervisor_log())
            .env("TMPDIR", self.temp_dir())
            .env(TOKEN, &self.token)
            .env_remove("NEXTEST_RUN_ID")
            .env_remove("NEXTEST_TEST_NAME")
            .current_dir(fixtures::workspace_dir());
        command
    }

    /// Waits until each of `tests` has reached its body, with its services up.
    fn wait_for(&self, tests: &[&str], child: &mut Child) {
        let deadline = Instant::now() + STARTED;
        loop {
            let missing: Vec<&&str> = tests
                .iter()
                .filter(|t| !self.markers().join(t).exists())
                .collect();
            if missing.is_empty() {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the suite ended ({status}) before {missing:?} ran");
            }
            assert!(
                Instant::now() < deadline,
                "{missing:?} did not reach their bodies within {STARTED:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The hanging suite's binary, run directly (as `cargo test` runs it) with `args`.
    fn spawn_suite(&self, args: &[&str]) -> Child {
        self.command(suite_binary())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the hanging suite")
    }

    /// The hanging suite's binary, run to its end with `args`.
    fn run_suite(&self, args: &[&str]) -> Output {
        self.command(suite_binary())
            .args(args)
            .output()
            .expect("run the hanging suite")
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.leftovers().kill_processes();
    }
}

/// The user_hanging test binary, built (if need be) into this target directory.
fn suite_binary() -> PathBuf {
    fixtures::test_binary("user_hanging")
}

/// Sends SIGKILL to `child` and reaps it.
fn kill_9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

/// Waits until no process of the run is left, failing after [`SERVICES_GONE`].
fn assert_services_gone(leftovers: &Leftovers, killed: u32) {
    let deadline = Instant::now() + SERVICES_GONE;
    loop {
        let left = leftovers.processes();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{SERVICES_GONE:?} after SIGKILL of the suite {killed}, its processes still run:\n{}",
            leftovers.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tests_ended_by_nextest_s_timeout_leave_nothing() {
    let scene = Scene::new();
    let output = scene
        .command(fixtures::cargo())
        .args(["nextest", "run", "--workspace", "--test", "user_hanging"])
        .args(["--profile", "teardown-timeout", "--no-fail-fast"])
        .args(["--target-dir"])
        .arg(fixtures::target_dir())
        .args(["--", "hangs_in_a_"])
        .output()
        .expect("run cargo nextest");
    let text = fixtures::both(&output);
    assert!(!output.status.success(), "{text}");
    for test in ["hangs_in_a_shared_copy", "hangs_in_a_private_copy"] {
        assert!(
            text.lines()
                .any(|l| l.contains("TIMEOUT") && l.trim_end().ends_with(test)),
            "nextest did not report {test} timing out:\n{text}"
        );
        // It was killed in its body, with its services up.
        assert!(
            scene.markers().join(test).exists(),
            "{test} never reached its body:\n{text}"
        );
    }
    assert!(!text.contains("LEAK"), "nextest saw a leak:\n{text}");
    let log = std::fs::read_to_string(scene.supervisor_log()).unwrap_or_default();
    assert_eq!(
        log.matches("started topology ").count(),
        1,
        "one supervisor for the shared copy:\n{log}"
    );
    scene.leftovers().assert_nothing_left(REST_GONE);
}

#[test]
fn a_suite_killed_mid_test_takes_its_services_with_it() {
    let scene = Scene::new();
    let leftovers = scene.leftovers();
    let tests = ["hangs_in_a_shared_copy", "hangs_in_a_private_copy"];
    let mut suite = scene.spawn_suite(&["hangs_in_a_", "--test-threads", "2"]);
    scene.wait_for(&tests, &mut suite);
    let killed = suite.id();
    // The suite's workers run its binary too.
    let suite_exe = std::fs::read_link(format!("/proc/{killed}/exe")).unwrap();
    let services: Vec<u32> = leftovers
        .processes()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).ok() != Some(suite_exe.clone())
        })
        .collect();
    // Two copies of two services each.
    assert_eq!(
        services.len(),
        4,
        "the suite's services:\n{}",
        leftovers.snapshot()
    );

    kill_9(&mut suite);
    assert_services_gone(&leftovers, killed);

    // What only the killed process could have removed: its copies' state directories. The
    // next run removes them.
    let left = leftovers.snapshot();
    assert!(
        !left.files.is_empty(),
        "the killed suite left no state directory, so this test checks nothing of the next run"
    );
    let next = scene.run_suite(&["--exact", "passes"]);
    assert!(next.status.success(), "{}", fixtures::both(&next));
    assert!(
        String::from_utf8_lossy(&next.stdout).contains("1 passed"),
        "{}",
        fixtures::both(&next)
    );
    leftovers.assert_nothing_left(REST_GONE);
}

#[test]
fn containers_of_a_killed_suite_are_removed_by_the_next_run() {
    if !docker::require_docker("containers_of_a_killed_suite_are_removed_by_the_next_run") {
        return;
    }
    let scene = Scene::new();
    let mut suite = scene.spawn_suite(&["--exact", "docker::hangs"]);
    let killed = suite.id();
    let leftovers = scene.leftovers().with_docker_owner(killed);
    scene.wait_for(&["docker::hangs"], &mut suite);
    let before = leftovers.snapshot();
    // One container that no other container depends on: the run makes no network.
    assert!(
        before.containers.len() == 1 && before.networks.is_empty() && before.images.len() == 1,
        "the running suite's container and image:\n{before}"
    );

    kill_9(&mut suite);
    assert_services_gone(&leftovers, killed);
    // Containers do not die with their owner. (Another test's run, starting a container at
    // this moment, may have swept them already: its janitor does what the next run's would.)
    let orphans = leftovers.snapshot();
    if orphans.containers.is_empty() {
        eprintln!("another run's janitor removed the orphans first:\n{orphans}");
    } else {
        assert_eq!(
            orphans.containers, before.containers,
            "the container went with its killed owner:\n{orphans}"
        );
    }

    // The next run that starts a container sweeps what the dead one left.
    std::fs::remove_file(scene.markers().join("docker::hangs")).unwrap();
    let mut next = scene.spawn_suite(&["--exact", "docker::hangs"]);
    let next_pid = next.id();
    scene.wait_for(&["docker::hangs"], &mut next);
    // The sweep runs beside the next run's start, off its path: given a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let swept = loop {
        let swept = leftovers.snapshot();
        if (swept.containers.is_empty() && swept.images.is_empty())
            || std::time::Instant::now() > deadline
        {
            break swept;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        swept.containers.is_empty() && swept.networks.is_empty() && swept.images.is_empty(),
        "the next run left what the killed one had in Docker:\n{swept}"
    );
    let running = scene.leftovers().with_docker_owner(next_pid).snapshot();
    assert_eq!(
        running.containers.len(),
        1,
        "the next run's container:\n{running}"
    );

    // Ended by SIGTERM instead (nextest's timeout, `kill`), the suite removes its containers,
    // network and image before it ends; so it does after SIGHUP (a closed terminal, a lost SSH
    // session) and SIGQUIT.
    end_with(&mut next, "-TERM", leftovers);
    for sig in ["-HUP", "-QUIT"] {
        std::fs::remove_file(scene.markers().join("docker::hangs")).unwrap();
        let mut suite = scene.spawn_suite(&["--exact", "docker::hangs"]);
        scene.wait_for(&["docker::hangs"], &mut suite);
        let running = scene.leftovers().with_docker_owner(suite.id()).snapshot();
        assert_eq!(
            running.containers.len(),
            1,
            "the suite's container:\n{running}"
        );
        end_with(&mut suite, sig, scene.leftovers());
    }
}

#[test]
fn a_shared_and_an_isolated_copy_leave_no_image() {
    if !docker::require_docker("a_shared_and_an_isolated_copy_leave_no_image") {
        return;
    }
    // Both copies build the image's tag; each run must remove its own build, whichever ends
    // first, and neither may take the other's for one the user had. `--nocapture` runs both
    // in the suite's process (no workers), so that all they make carries its pid.
    for threads in ["1", "2"] {
        let scene = Scene::new();
        let suite = scene
            .command(suite_binary())
            .args(["docker::copies", "--nocapture", "--test-threads", threads])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the hanging suite");
        let pid = suite.id();
        let out = suite.wait_with_output().unwrap();
        let text = fixtures::both(&out);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("3 passed"), "{text}");
        scene
            .leftovers()
            .with_docker_owner(pid)
            .assert_nothing_left(REST_GONE);
    }
}

/// Sends `sig` (as `kill` takes it) to the suite and checks that its containers, network and
/// image went with it.
fn end_with(suite: &mut Child, sig: &str, leftovers: Leftovers) {
    let status = Command::new("kill")
        .args([sig, &suite.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    suite.wait().unwrap();
    leftovers
        .with_docker_owner(suite.id())
        .assert_nothing_left(REST_GONE);
}
