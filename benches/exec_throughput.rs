//! Event throughput: lines per second through `LocalLauncher` events, next to the same command
//! read straight from a pipe in the same run.
//!
//! ```text
//! cargo bench --bench exec_throughput
//! ```
//!
//! The producer is `seq 2000000` for both. The baseline spawns it with
//! `std::process::Command`, stdout piped, and reads it line by line with `BufRead::lines` (a
//! `String` per line, like our events). Each side runs 3 times, alternating; the best run of
//! each is reported, with the median beside it. Goal: events at least half the raw rate.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, ProcessEvent, ProcessHandle};

const LINES: u64 = 2_000_000;
const RUNS: usize = 3;

fn main() {
    // `cargo bench` passes `--bench`; a name filter, if any, is ignored: there is one benchmark.
    let mut raw = Vec::new();
    let mut events = Vec::new();
    for run in 1..=RUNS {
        let r = raw_pipe();
        let e = through_events();
        println!(
            "run {run}: raw pipe {:>6.2} Mlines/s   events {:>6.2} Mlines/s",
            rate(r) / 1e6,
            rate(e) / 1e6
        );
        raw.push(r);
        events.push(e);
    }
    let (raw_best, raw_median) = best_and_median(&mut raw);
    let (ev_best, ev_median) = best_and_median(&mut events);
    println!();
    println!("{LINES} lines from `seq {LINES}`, best (median) of {RUNS} runs:");
    println!(
        "  raw pipe (std::process + BufRead::lines): {:>12.0} lines/s ({:.0})",
        rate(raw_best),
        rate(raw_median)
    );
    println!(
        "  LocalLauncher events:                      {:>12.0} lines/s ({:.0})",
        rate(ev_best),
        rate(ev_median)
    );
    let ratio = rate(ev_best) / rate(raw_best);
    println!(
        "  ratio events / raw: {ratio:.2} (median {:.2}); goal >= 0.50: {}",
        rate(ev_median) / rate(raw_median),
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
}

fn rate(d: Duration) -> f64 {
    LINES as f64 / d.as_secs_f64()
}

fn best_and_median(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

/// The baseline: the producer's stdout read line by line in this process.
fn raw_pipe() -> Duration {
    let start = Instant::now();
    let mut child = StdCommand::new("seq")
        .arg(LINES.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("failed to spawn `seq`");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut count = 0u64;
    let mut bytes = 0usize;
    for line in BufReader::with_capacity(64 * 1024, stdout).lines() {
        let line = line.expect("failed to read from `seq`");
        bytes += line.len();
        count += 1;
    }
    assert!(child.wait().expect("failed to wait for `seq`").success());
    let elapsed = start.elapsed();
    assert_eq!(count, LINES);
    std::hint::black_box(bytes);
    elapsed
}

/// The same producer through `LocalLauncher`: every line becomes a `ProcessEvent::Stdout`.
fn through_events() -> Duration {
    smol::block_on(async {
        let start = Instant::now();
        let mut p = LocalLauncher
            .spawn(&Command::new("seq").arg(LINES.to_string()))
            .await
            .expect("failed to spawn `seq`");
        let mut events = p.take_events().expect("fresh events");
        let mut count = 0u64;
        let mut bytes = 0usize;
        let mut exited = false;
        while let Some(event) = events.recv().await {
            match event {
                ProcessEvent::Stdout(line) => {
                    bytes += line.len();
                    count += 1;
                }
                ProcessEvent::Exited(status) => {
                    assert!(status.success());
                    exited = true;
                }
                ProcessEvent::Started { .. } | ProcessEvent::Stderr(_) => {}
            }
        }
        let elapsed = start.elapsed();
        assert!(exited, "the stream ends with Exited");
        assert_eq!(count, LINES);
        std::hint::black_box(bytes);
        elapsed
    })
}
