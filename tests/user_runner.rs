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
            .args(["--test", "user_demo", "--test", "user_failing"])
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
            "echo_answers_at_its_address",
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
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out",
        ),
        (
            &["shares_one_copy", "--test-threads", "1"][..],
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 8 filtered out",
        ),
        (
            &["--skip", "isolated", "--skip", "shares", "--skip", "web"][..],
            "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 4 filtered out",
        ),
        (
            &["--ignored"][..],
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out",
        ),
        // Left out, with the reason its attribute gives, and without starting its topology.
        (
            &["--exact", "runs_only_when_asked"][..],
            "test runs_only_when_asked ... ignored (shows how a test is left out unless asked for)",
        ),
        (
            &["--exact", "runs_only_when_asked"][..],
            "test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 9 filtered out",
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
