//! The cost of one `LocalLauncher::spawn` with 0, 100 and 300 children already running (each
//! with the thread that watches it), next to two baselines measured in the same process at the
//! same moment:
//!
//! - `std`: `std::process::Command::spawn` with the same stdio (null stdin, piped stdout and
//!   stderr), which uses `posix_spawn` (no fork). This is the floor; goal: a ratio near 1 at
//!   every level.
//! - `std+fork`: the same with an empty `pre_exec` closure, which makes std fork. This is how
//!   `LocalLauncher` used to start children; it grows with the parent's threads and memory map.
//!
//! Each figure is the median (and the mean) of `SPAWN_BENCH_RUNS` spawns of `true` (default
//! 200); only the spawn call is timed, the child is collected outside the clock.
//!
//! Run: `cargo bench --bench spawn` (release).

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, LocalProcess};

fn main() {
    let runs: usize = std::env::var("SPAWN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut live: Vec<LocalProcess> = Vec::new();
    println!("per-spawn cost, median (mean) of {runs} spawns of `true`:");
    println!(
        "{:>14} {:>18} {:>18} {:>18} {:>8}",
        "live children", "std", "std+fork", "LocalLauncher", "ratio"
    );
    for level in [0, 100, 300] {
        while live.len() < level {
            live.push(
                smol::block_on(LocalLauncher.spawn(&Command::new("sleep").arg("3600")))
                    .expect("spawn a live child"),
            );
        }
        // Interleaved, so that the three see the same machine load.
        let (mut std_spawn, mut forked, mut harness) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            std_spawn.push(time_std(false));
            forked.push(time_std(true));
            harness.push(time_local());
        }
        let (s, f, h) = (
            Stats::of(&mut std_spawn),
            Stats::of(&mut forked),
            Stats::of(&mut harness),
        );
        println!(
            "{level:>14} {s:>18} {f:>18} {h:>18} {:>8.2}",
            h.median.as_secs_f64() / s.median.as_secs_f64()
        );
    }
    println!("ratio: LocalLauncher / std, medians");
    drop(live);
}

/// Times one std spawn of `true`, with a fork (`pre_exec`) or without.
fn time_std(fork: bool) -> Duration {
    let mut cmd = std::process::Command::new("true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if fork {
        // SAFETY: the closure does nothing; its presence alone makes std fork.
        unsafe { cmd.pre_exec(|| Ok(())) };
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn `true`");
    let took = start.elapsed();
    child.wait().expect("wait for `true`");
    took
}

/// Times one `LocalLauncher::spawn` of `true`.
fn time_local() -> Duration {
    let cmd = Command::new("true");
    let start = Instant::now();
    let mut p = smol::block_on(LocalLauncher.spawn(&cmd)).expect("spawn `true`");
    let took = start.elapsed();
    smol::block_on(harness::exec::ProcessHandle::wait(&mut p)).expect("wait for `true`");
    took
}

struct Stats {
    median: Duration,
    mean: Duration,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        samples.sort();
        Stats {
            median: samples[samples.len() / 2],
            mean: samples.iter().sum::<Duration>() / samples.len() as u32,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!(
            "{:.3} ({:.3}) ms",
            self.median.as_secs_f64() * 1e3,
            self.mean.as_secs_f64() * 1e3
        );
        f.pad(&text)
    }
}
