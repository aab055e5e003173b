//! The runner from outside, as cargo and nextest drive it: the user suites' binaries run with
//! libtest's arguments; listing starts nothing; filters select as libtest's do; and a failing
//! run (tests/user_failing.rs) reports each failure with the services' log tails and leaves no
//! process and no state directory behind.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The variable each run of a suite gets, with a value of its own: every process the run
/// starts inherits it, which is how leftovers are found.
const TOKEN: &str = "HARNESS_RUNNER_TEST_TOKEN";

/// The test binaries of the user suites, built (if need be) by cargo into this target dir.
fn suite_binaries() -> &'static HashMap<String, PathBuf> {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = fixtures::profile_dir()
            .parent()
            .expect("the target directory")
            .to_path_buf();
        // --workspace, as `cargo nextest run --workspace` builds: features are unified over
        // the packages built, so `-p topo-harness-cli` would build every dependency once more.
        let out = Command::new(cargo)
            .args(["test", "--workspace", "--no-run", "--message-format=json"])
            .args([
                "--test",
                "user_demo",
                "--test",
                "user_failing",
                "--test",
                "user_capture",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(fixtures::workspace_dir())
            .output()
            .expect("run cargo test --no-run");
        assert!(
            out.status.success(),
            "cargo test --no-run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut binaries = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(name), Some(exe)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                binaries.insert(name.to_string(), PathBuf::from(exe));
            }
        }
        binaries
    })
}

/// One run of a suite binary, in a temporary directory of its own, with its own token.
struct Run {
    output: Output,
    token: String,
    tmp: tempfile::TempDir,
    _project: tempfile::TempDir,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn both(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// Asserts that no process of the run is left and its temporary directory is empty.
    fn assert_nothing_left(&self) {
        let left = processes_with(&self.token);
        assert!(
            left.is_empty(),
            "processes left behind: {left:?}\n{}",
            self.both()
        );
        let files: Vec<PathBuf> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            files.is_empty(),
            "files left in TMPDIR: {files:?}\n{}",
            self.both()
        );
    }
}

fn run_suite(suite: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let binary = &suite_binaries()[suite];
    let project = fixtures::project_dir();
    let tmp = tempfile::Builder::new()
        .prefix("harness-runner-tmp-")
        .tempdir()
        .unwrap();
    let token = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let output = Command::new(binary)
        .args(args)
        .env("HARNESS_BASE_DIR", project.path())
        .env("TMPDIR", tmp.path())
        .env(TOKEN, &token)
        // Run as cargo test runs it: under nextest this process's run id would make the suite
        // share through a supervisor that lives as long as this test.
        .env_remove("NEXTEST_RUN_ID")
        .envs(env.iter().copied())
        .current_dir(fixtures::workspace_dir())
        .output()
        .expect("run the suite");
    Run {
        output,
        token,
        tmp,
        _project: project,
    }
}

/// The pids of the live processes whose environment has `TOKEN=token`.
fn processes_with(token: &str) -> Vec<u32> {
    fixtures::processes_with_env(TOKEN, token)
}

/// The `name: test` lines of `--list`.
fn listed(stdout: &str) -> Vec<&str> {
    let mut names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_leftover_check_sees_a_process_of_the_run() {
    let token = format!("self-check-{}", std::process::id());
    let mut child = Command::new("sleep")
        .arg("30")
        .env(TOKEN, &token)
        .spawn()
        .unwrap();
    // Until the child has exec'd, /proc shows the parent's environment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = processes_with(&token);
    while seen.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        seen = processes_with(&token);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen, [child.id()]);
}

#[test]
fn listing_names_every_test_and_starts_nothing() {
    let run = run_suite("user_demo", &["--list"], &[]);
    assert!(run.output.status.success(), "{}", run.both());
    let stdout = run.stdout();
    assert_eq!(
        listed(&stdout),
        [
            "a_test_prefix_keeps_a_tests_data_apart",
            "echo_answers_at_its_address",
            "exec_runs_a_command_beside_a_service",
            "isolated::restarts_and_stops_in_a_private_copy",
            "kv_api_stores_through_kv_store",
            "overlays_add_services_and_settings",
            "restarts_a_service_of_its_shared_copy",
            "runs_only_when_asked",
            "shares_one_copy_a",
            "shares_one_copy_b",
            "the_topology_names_every_service",
            "web_is_healthy",
        ]
    );
    let ignored = run_suite("user_demo", &["--list", "--ignored"], &[]);
    assert_eq!(listed(&ignored.stdout()), ["runs_only_when_asked"]);
    // A start would have made a state directory in TMPDIR.
    run.assert_nothing_left();
    ignored.assert_nothing_left();
}

#[test]
fn filters_select_as_libtest_does() {
    for (args, summary) in [
        (
            &["--exact", "echo_answers_at_its_address"][..],
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 11 filtered out",
        ),
        (
            &["shares_one_copy", "--test-threads", "1"][..],
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 10 filtered out",
        ),
        (
            &["--skip", "isolated", "--skip", "shares", "--skip", "web"][..],
            "test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 4 filtered out",
        ),
        (
            &["--ignored"][..],
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 11 filtered out",
        ),
        // Left out, with the reason its attribute gives, and without starting its topology.
        (
            &["--exact", "runs_only_when_asked"][..],
            "test runs_only_when_asked ... ignored (shows how a test is left out unless asked for)",
        ),
        (
            &["--exact", "runs_only_when_asked"][..],
            "test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 11 filtered out",
        ),
    ] {
        let run = run_suite("user_demo", args, &[]);
        assert!(run.output.status.success(), "{args:?}: {}", run.both());
        assert!(run.stdout().contains(summary), "{args:?}: {}", run.both());
        run.assert_nothing_left();
    }
}

#[test]
fn the_failing_suite_selects_nothing_unless_enabled() {
    let run = run_suite("user_failing", &[], &[]);
    assert!(run.output.status.success(), "{}", run.both());
    assert!(
        run.stdout().contains("0 passed; 0 failed"),
        "{}",
        run.both()
    );
    run.assert_nothing_left();
}

/// The failure message libtest-mimic prints for `test`, up to the next test's.
fn failure_of<'a>(stdout: &'a str, test: &str) -> &'a str {
    let start = stdout
        .find(&format!("---- {test} ----"))
        .unwrap_or_else(|| panic!("no failure report for {test} in:\n{stdout}"));
    let rest = &stdout[start..];
    let end = rest[5..].find("\n---- ").map_or(rest.len(), |i| i + 5);
    &rest[..end]
}

#[test]
fn a_failing_run_reports_each_failure_and_leaves_nothing() {
    let run = run_suite(
        "user_failing",
        &["--test-threads", "2"],
        &[("HARNESS_FAILING_SUITE", "1")],
    );
    let stdout = run.stdout();
    assert_eq!(run.output.status.code(), Some(101), "{}", run.both());
    assert!(
        stdout.contains("test result: FAILED. 1 passed; 8 failed; 0 ignored"),
        "{}",
        run.both()
    );

    let panicked = failure_of(&stdout, "panics");
    assert!(
        panicked.contains("test panicked: deliberate panic after reaching echo"),
        "{panicked}"
    );
    // Each service of the topology has its section in the log tail.
    for service in ["kv-store", "kv-api", "echo", "web"] {
        assert!(
            panicked.contains(&format!("\n  {service}:")),
            "{service}: {panicked}"
        );
    }
    assert!(
        panicked.contains("last lines of each service of"),
        "{panicked}"
    );

    let error = failure_of(&stdout, "returns_an_error");
    assert!(
        error.contains("the test returned an error: \"deliberate error\""),
        "{error}"
    );
    assert!(error.contains("last lines of each service of"), "{error}");

    let timeout = failure_of(&stdout, "times_out");
    assert!(
        timeout.contains("did not finish within its timeout of 1s"),
        "{timeout}"
    );

    let private = failure_of(&stdout, "times_out_in_a_private_copy");
    assert!(
        private.contains("did not finish within its timeout of 1s"),
        "{private}"
    );

    let isolated = failure_of(&stdout, "panics_in_a_private_copy");
    assert!(
        isolated.contains("deliberate panic in a private copy"),
        "{isolated}"
    );

    // A tokio client's panic outside tokio says what to write.
    let tokio = failure_of(&stdout, "uses_tokio_without_its_runtime");
    assert!(
        tokio.contains("there is no reactor running")
            && tokio.contains("runtime = \"tokio\"")
            && tokio.contains("the `tokio` feature of harness"),
        "{tokio}"
    );

    // The topology that cannot start fails both its tests with the same error, started once.
    let first = failure_of(&stdout, "cannot_start::first");
    let second = failure_of(&stdout, "cannot_start::second");
    let message = |report: &str| report.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        first.contains("start topology") && first.contains("start service broken"),
        "{first}"
    );
    assert_eq!(message(first), message(second));

    run.assert_nothing_left();
}

/// Runs the capture suite (tests/user_capture.rs) with `args`.
fn run_capture(args: &[&str]) -> Run {
    run_suite("user_capture", args, &[("HARNESS_CAPTURE_SUITE", "1")])
}

/// The part of `stdout` from the failure of `test` to the next one's.
fn failure_section<'a>(stdout: &'a str, test: &str) -> &'a str {
    let heading = format!("---- {test} ----");
    let start = stdout
        .find(&heading)
        .unwrap_or_else(|| panic!("no failure of {test} in:\n{stdout}"));
    let rest = &stdout[start + heading.len()..];
    &rest[..rest
        .find("\n---- ")
        .or_else(|| rest.find("\nfailures:"))
        .unwrap_or(rest.len())]
}

#[test]
fn a_passing_test_s_output_is_kept_and_a_failing_one_s_shown_with_its_failure() {
    let run = run_capture(&[]);
    let stdout = run.stdout();
    let stderr = String::from_utf8_lossy(&run.output.stderr).into_owned();
    assert!(
        stdout.contains("test result: FAILED. 3 passed; 3 failed"),
        "{}",
        run.both()
    );
    // Nowhere: neither on stdout nor on stderr.
    for passing in [
        "stdout of a passing test",
        "stderr of a passing test",
        "last words without a newline",
    ] {
        assert!(!run.both().contains(passing), "{passing}: {}", run.both());
    }
    let failing = failure_section(&stdout, "prints_and_fails");
    for line in [
        "stdout of a failing test, echo at 127.0.0.1:",
        "stderr of a failing test",
        // The panic hook names the test, as libtest's thread name does.
        "thread 'prints_and_fails'",
        "deliberate failure after printing",
        "last lines of each service of",
    ] {
        assert!(failing.contains(line), "{line}: {failing}");
    }
    assert!(!stderr.contains("stdout of a failing test"), "{stderr}");
    // A body that blocks its thread fails when its timeout and a second have passed, rather
    // than when the body yields (it never does).
    let blocked = failure_section(&stdout, "blocks_its_thread_past_its_timeout");
    assert!(
        blocked.contains("about to block the test's thread")
            && blocked.contains("did not finish within its timeout of 1s")
            && blocked.contains("blocked its thread"),
        "{blocked}"
    );
    let exited = failure_section(&stdout, "ends_its_process");
    assert!(
        exited.contains("about to exit with status 3") && exited.contains("exit status: 3"),
        "{exited}"
    );
    run.assert_nothing_left();
}

#[test]
fn nocapture_shows_what_tests_print_as_they_print_it() {
    for (args, env) in [
        (&["--nocapture"][..], &[][..]),
        (&[][..], &[("RUST_TEST_NOCAPTURE", "1")][..]),
    ] {
        let run = run_suite(
            "user_capture",
            &[args, &["prints_and_passes"]].concat(),
            &[env, &[("HARNESS_CAPTURE_SUITE", "1")]].concat(),
        );
        assert!(
            run.output.status.success(),
            "{args:?} {env:?}: {}",
            run.both()
        );
        assert!(
            run.stdout().contains("stdout of a passing test")
                && String::from_utf8_lossy(&run.output.stderr).contains("stderr of a passing test"),
            "{args:?} {env:?}: {}",
            run.both()
        );
        run.assert_nothing_left();
    }
}

#[test]
fn show_output_lists_the_successes_with_what_they_printed() {
    let run = run_capture(&["--show-output", "prints_"]);
    let stdout = run.stdout();
    let successes = stdout
        .find("\nsuccesses:\n")
        .map(|at| &stdout[at..])
        .unwrap_or_else(|| panic!("no successes section: {}", run.both()));
    for line in [
        "---- prints_and_passes stdout ----\nstdout of a passing test, echo at 127.0.0.1:",
        "stderr of a passing test",
        "---- prints_without_a_newline_and_passes stdout ----\na passing test's last words \
         without a newline\n",
        "\nsuccesses:\n    prints_and_passes\n    prints_without_a_newline_and_passes\n",
    ] {
        assert!(successes.contains(line), "{line}: {}", run.both());
    }
    run.assert_nothing_left();
}

#[test]
fn json_output_is_json_lines_only_with_output_captured() {
    let run = run_capture(&["-Z", "unstable-options", "--format", "json"]);
    assert!(!run.output.status.success(), "{}", run.both());
    let stdout = run.stdout();
    let mut events = 0;
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", run.both()));
        events += 1;
    }
    // A suite start, a start and an end per test, the suite's end.
    assert!(events >= 14, "{}", run.both());
    assert!(
        stdout.contains("stdout of a failing test"),
        "{}",
        run.both()
    );
    assert!(
        !stdout.contains("stdout of a passing test"),
        "{}",
        run.both()
    );
    run.assert_nothing_left();
}
