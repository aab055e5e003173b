//! `cargo run --example suite_runtimes`, the README's runnable suite: its three bodies (no
//! runtime, tokio, plain threads) pass against the echo server, started and torn down.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::process::Command;

#[test]
fn the_example_suite_passes_on_each_runtime() {
    // cargo builds the examples with the tests.
    let example = fixtures::profile_dir().join("examples/suite_runtimes");
    let output = Command::new(&example)
        .current_dir(fixtures::workspace_dir())
        .env_remove("NEXTEST_RUN_ID")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", example.display()));
    let out = fixtures::both(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("test result: ok. 3 passed; 0 failed"), "{out}");
}
