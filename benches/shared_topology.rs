//! What sharing a topology buys: 50 tests on one topology that takes at least 250 ms to start
//! (`benches/topologies/slow-start.yaml`, the suite `tests/bench_suite.rs`), timed
//!
//! - under `cargo test` (the suite binary and its workers, with output captured, and with
//!   `--nocapture` in one process) and under `cargo nextest run` (a process
//!   per test), sharing one copy of the topology;
//! - next to the ideal: one start-up, the 50 test bodies one after another, and one teardown,
//!   measured in this process with the same ServiceManager;
//! - and next to the same 50 tests with `isolated`, which start a copy each.
//!
//! Under nextest the wall time includes a fixed cost that does not depend on the tests (cargo's
//! build check, nextest listing the binary); it is measured as the same command selecting no
//! test and shown apart, with nextest's own run time from its summary line.
//!
//! Each figure is the median of three runs. Goals: shared within 1.3 times the ideal, and at
//! least 10 times faster than a start per test. Needs cargo-nextest for the nextest figure
//! (skipped with a note otherwise).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::orchestrator::ServiceManager;
use harness::registry::Registry;
use harness::topology::TopologyConfig;

#[path = "../tests/support/http.rs"]
mod http;
use http::http;

const TESTS: usize = 50;
const RUNS: usize = 3;
const TOPOLOGY: &str = "benches/topologies/slow-start.yaml";

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // The programs the topology starts, where it names them (./target/debug).
    succeed(
        Command::new(&cargo)
            .args(["build", "--quiet", "-p", "harness-fixtures", "--bins"])
            .current_dir(root),
    );
    let suite = suite_binary(&cargo, root);

    println!("{TESTS} tests on a topology that takes at least 250 ms to start (median of {RUNS}):");
    let ideal = median(|| ideal_run(root));
    println!(
        "  ideal (one start, {TESTS} bodies, one teardown)  {:>8.0} ms",
        ms(ideal)
    );
    let cargo_test = median(|| timed(&mut suite_command(&suite, root, "shared::")));
    println!(
        "  shared, cargo test                            {:>8.0} ms  {:.2}x the ideal",
        ms(cargo_test),
        ratio(cargo_test, ideal)
    );
    // The same with --nocapture: the bodies in the runner's process, no workers; what output
    // capture costs is the difference.
    let nocapture = median(|| timed(suite_command(&suite, root, "shared::").arg("--nocapture")));
    println!(
        "    of which without output capture (--nocapture) {:>6.0} ms  {:.2}x the ideal",
        ms(nocapture),
        ratio(nocapture, ideal)
    );
    if nextest_available(&cargo, root) {
        // nextest's fixed cost (cargo's build check, listing the binary), paid whatever the
        // tests do: the same command with a filter that selects no test.
        let fixed = median(|| nextest_run(&cargo, root, "none()").wall);
        let runs: Vec<NextestRun> = (0..RUNS)
            .map(|_| nextest_run(&cargo, root, "test(/^shared::/)"))
            .collect();
        let wall = median_of(runs.iter().map(|r| r.wall));
        let phase = median_of(runs.iter().map(|r| r.phase));
        println!(
            "  shared, cargo nextest run                     {:>8.0} ms  {:.2}x the ideal \
             (wall time)",
            ms(wall),
            ratio(wall, ideal)
        );
        println!(
            "    of which nextest's fixed cost               {:>8.0} ms  (the same command \
             selecting no test)",
            ms(fixed)
        );
        println!(
            "    wall time less the fixed cost               {:>8.0} ms  {:.2}x the ideal",
            ms(wall.saturating_sub(fixed)),
            ratio(wall.saturating_sub(fixed), ideal)
        );
        println!(
            "    nextest's own run time (its Summary line)   {:>8.0} ms  {:.2}x the ideal",
            ms(phase),
            ratio(phase, ideal)
        );
        // What a process per test costs at least: the suite binary started for a test that
        // does not exist, once per test, spread over the cores nextest uses.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let empty = median(|| {
            let start = Instant::now();
            for _ in 0..20 {
                timed(&mut suite_command(&suite, root, "no-such-test"));
            }
            start.elapsed() / 20
        });
        let floor = ideal + empty * TESTS as u32 / cores as u32;
        println!(
            "    ideal plus {TESTS} empty processes over {cores} cores {:>8.0} ms  \
             (one empty process: {:.1} ms)",
            ms(floor),
            ms(empty)
        );
        println!(
            "    nextest's run time against that             {:>8.0} ms  {:.2}x",
            ms(phase),
            ratio(phase, floor)
        );
    } else {
        println!("  shared, cargo nextest run: skipped, cargo-nextest is not installed");
    }
    let isolated = median(|| timed(&mut suite_command(&suite, root, "isolated::")));
    println!(
        "  isolated (a start per test), cargo test       {:>8.0} ms  {:.1}x shared",
        ms(isolated),
        ratio(isolated, cargo_test)
    );
}

/// The ideal: the topology started once, the bodies run one after another, then stopped.
fn ideal_run(root: &Path) -> Duration {
    let topology = TopologyConfig::load(root.join(TOPOLOGY)).unwrap_or_else(|e| panic!("{e}"));
    let manager = ServiceManager::new(topology, Registry::new()).with_base_dir(root);
    smol::block_on(async {
        let start = Instant::now();
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        let web = manager.status("web").await.unwrap().addr.unwrap();
        let store = manager.status("store").await.unwrap().addr.unwrap();
        for _ in 0..TESTS {
            assert_eq!(http(web, "GET", "/health", "").status, 200);
            assert_eq!(http(store, "GET", "/health", "").status, 200);
        }
        manager.stop_all().await.unwrap_or_else(|e| panic!("{e}"));
        start.elapsed()
    })
}

/// The suite's test binary, built in the dev profile as `cargo test` builds it.
fn suite_binary(cargo: &str, root: &Path) -> PathBuf {
    let out = Command::new(cargo)
        .args([
            "test",
            "--quiet",
            "-p",
            "topo-harness-cli",
            "--test",
            "bench_suite",
        ])
        .args(["--no-run", "--message-format=json"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "building the bench suite failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["target"]["name"] == "bench_suite")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .expect("cargo named the bench suite's executable")
}

fn suite_env(root: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("HARNESS_BENCH_SUITE", PathBuf::from("1")),
        (harness::testing::BASE_DIR_ENV, root.to_path_buf()),
    ]
}

fn suite_command(suite: &Path, root: &Path, filter: &str) -> Command {
    let mut command = Command::new(suite);
    command
        .args([filter, "--quiet"])
        .current_dir(root)
        .envs(suite_env(root));
    command
}

/// One `cargo nextest run` of the suite: its wall time and the run time nextest reports.
struct NextestRun {
    wall: Duration,
    phase: Duration,
}

fn nextest_run(cargo: &str, root: &Path, filter: &str) -> NextestRun {
    let start = Instant::now();
    let out = Command::new(cargo)
        .args(["nextest", "run", "--cargo-quiet", "-p", "topo-harness-cli"])
        .args(["--test", "bench_suite", "-E", filter, "--no-tests", "pass"])
        .args(["--status-level", "none", "--final-status-level", "none"])
        .current_dir(root)
        .envs(suite_env(root))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run cargo nextest");
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo nextest run failed:\n{stderr}");
    NextestRun {
        wall,
        phase: summary_time(&stderr).unwrap_or_default(),
    }
}

/// The run time in nextest's `Summary [   0.523s] ...` line.
fn summary_time(stderr: &str) -> Option<Duration> {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("Summary"))?;
    let inside = line.split('[').nth(1)?.split(']').next()?;
    let seconds: f64 = inside.trim().trim_end_matches('s').parse().ok()?;
    Some(Duration::from_secs_f64(seconds))
}

fn nextest_available(cargo: &str, root: &Path) -> bool {
    Command::new(cargo)
        .args(["nextest", "--version"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` to success and returns how long it took.
fn timed(command: &mut Command) -> Duration {
    let start = Instant::now();
    succeed(command.stdout(Stdio::null()));
    start.elapsed()
}

fn succeed(command: &mut Command) {
    let status = command.status().expect("run a command");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn median(mut run: impl FnMut() -> Duration) -> Duration {
    median_of((0..RUNS).map(|_| run()))
}

fn median_of(times: impl Iterator<Item = Duration>) -> Duration {
    let mut times: Vec<Duration> = times.collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
