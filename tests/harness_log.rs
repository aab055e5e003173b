//! `HARNESS_LOG` (else `RUST_LOG`) shows harness's tracing: a user suite (tests/user_demo.rs)
//! run with it writes harness's debug events to stderr and none to stdout, whose `--format
//! json` lines stay JSON; run without either variable, it writes none.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::process::{Command, Output};

/// Runs one test of the demo suite, as cargo runs it, with `env` set and both variables
/// otherwise unset.
fn run_demo(env: &[(&str, &str)]) -> Output {
    let project = fixtures::project_dir();
    let output = Command::new(fixtures::test_binary("user_demo"))
        .args(["--exact", "echo_answers_at_its_address", "--format", "json"])
        .env("HARNESS_BASE_DIR", project.path())
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("HARNESS_LOG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .current_dir(fixtures::workspace_dir())
        .output()
        .expect("run the demo suite");
    assert!(output.status.success(), "{}", fixtures::both(&output));
    output
}

/// The lines of `text` that are debug events of harness, as tracing-subscriber's fmt layer
/// writes them without colours: `TIME DEBUG harness::MODULE: MESSAGE`.
fn harness_debug_lines(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|line| line.contains(" DEBUG harness::"))
        .map(String::from)
        .collect()
}

fn assert_stdout_is_json(output: &Output) {
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line on stdout: {line:?}\n{}",
            fixtures::both(output)
        );
    }
}

#[test]
fn harness_log_shows_debug_events_on_stderr_only() {
    // HARNESS_LOG wins over RUST_LOG, which says nothing here.
    let output = run_demo(&[("HARNESS_LOG", "harness=debug"), ("RUST_LOG", "off")]);
    let debug = harness_debug_lines(&output.stderr);
    // The demo's echo server was started, and the executor says so.
    assert!(
        debug
            .iter()
            .any(|l| l.contains("harness::exec::local: spawned")),
        "no debug line of harness on stderr:\n{}",
        fixtures::both(&output)
    );
    assert_eq!(harness_debug_lines(&output.stdout), Vec::<String>::new());
    assert_stdout_is_json(&output);
}

#[test]
fn rust_log_is_read_when_harness_log_is_unset() {
    let output = run_demo(&[("RUST_LOG", "harness=debug")]);
    assert!(
        !harness_debug_lines(&output.stderr).is_empty(),
        "no debug line of harness on stderr:\n{}",
        fixtures::both(&output)
    );
    assert_eq!(harness_debug_lines(&output.stdout), Vec::<String>::new());
}

#[test]
fn without_either_variable_the_runner_traces_nothing() {
    let output = run_demo(&[]);
    let both = fixtures::both(&output);
    for level in ["TRACE", "DEBUG", " INFO", " WARN"] {
        assert!(
            !both.contains(&format!(" {level} harness")),
            "a tracing line without HARNESS_LOG or RUST_LOG:\n{both}"
        );
    }
    assert_stdout_is_json(&output);
}
