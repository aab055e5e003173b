//! A service that writes lines as fast as it can (`yes` with a 70-character line) under
//! `harness up -d`, next to `yes LINE > file` on the same disk for the same time, in the same
//! run.
//!
//! Prints the lines per second that reach the service's log (summed over its rotated files,
//! each file's size watched until it is rotated away), the supervisor's peak RSS (`VmHWM`) and
//! its share of a CPU, and the same lines per second for the baseline with the ratio. The log
//! keeps the default cap (64 MiB in 3 files), so rotation is part of what is measured.
//!
//! Run: `cargo bench --bench logs`. `LOGS_BENCH_SECS` sets the seconds (default 5).

#[path = "../tests/support/memory.rs"]
mod memory;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LINE: &str = "the quick brown fox jumps over the lazy dog, again and again, 70 chars";

fn main() {
    assert_eq!(LINE.len(), 70);
    let secs: u64 = std::env::var("LOGS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("state");
    let topology = dir.path().join("chatty.yaml");
    std::fs::write(
        &topology,
        format!(
            "services:\n  chatty:\n    target:\n      process:\n        binary: /usr/bin/yes\n        \
             args: [\"{LINE}\"]\n"
        ),
    )
    .expect("write the topology");

    let (harness_lines, peak_kib, cpu) = under_harness(&topology, &state, duration);
    let baseline_lines = yes_to_file(&dir.path().join("yes.out"), duration);
    let per_sec = |lines: u64| lines as f64 / duration.as_secs_f64();
    println!("a service writing {LINE:?} as fast as it can, {secs} s each, on the same disk:");
    println!(
        "  harness up -d (log capped at 64 MiB x 3): {:>12.0} lines/s  supervisor peak RSS {:.1} MiB, {:.0}% of a CPU",
        per_sec(harness_lines),
        peak_kib as f64 / 1024.0,
        cpu * 100.0
    );
    println!(
        "  yes LINE > file (baseline):               {:>12.0} lines/s",
        per_sec(baseline_lines)
    );
    println!(
        "ratio harness / baseline: {:.2}",
        harness_lines as f64 / baseline_lines as f64
    );
}

fn harness(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env("HARNESS_STATE_DIR", state)
        .env_remove("HARNESS_LOG_MAX_SIZE")
        .env_remove("HARNESS_LOG_MAX_FILES")
        .stdin(Stdio::null())
        .output()
        .expect("run harness")
}

/// Starts the topology, watches its log files for `duration`, and returns the lines written,
/// the supervisor's peak RSS in KiB and the CPU share it used.
fn under_harness(topology: &Path, state: &Path, duration: Duration) -> (u64, u64, f64) {
    let file = topology.to_str().expect("a UTF-8 path");
    let up = harness(state, &["up", "-d", file]);
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "harness up -d failed: {stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let supervisor: u32 = stdout
        .split("(supervisor pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .expect("the supervisor's pid");
    let run = std::fs::read_dir(state)
        .expect("the state directory")
        .next()
        .expect("a run directory")
        .expect("a run directory")
        .path();
    let log = run.join("services/chatty.log");
    let names = [
        log.clone(),
        run.join("services/chatty.log.1"),
        run.join("services/chatty.log.2"),
    ];
    // Every file's largest size seen, by inode: a file keeps its inode when it is renamed.
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    let watch = |sizes: &mut HashMap<u64, u64>| {
        for name in &names {
            if let Ok(meta) = std::fs::metadata(name) {
                let size = sizes.entry(meta.ino()).or_default();
                *size = (*size).max(meta.len());
            }
        }
    };
    let cpu_before = cpu_ticks(supervisor);
    let started = Instant::now();
    watch(&mut sizes);
    let at_start = sizes.clone();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(5));
        watch(&mut sizes);
    }
    let elapsed = started.elapsed();
    let cpu =
        (cpu_ticks(supervisor) - cpu_before) as f64 / ticks_per_second() / elapsed.as_secs_f64();
    let peak_kib = memory::peak_rss_kib(supervisor);
    let down = harness(state, &["down", file]);
    assert!(down.status.success(), "harness down failed");
    let written: u64 = sizes
        .iter()
        .map(|(ino, size)| size - at_start.get(ino).copied().unwrap_or(0))
        .sum();
    (written / (LINE.len() as u64 + 1), peak_kib, cpu)
}

/// `yes LINE > out` for `duration`; returns the lines written.
fn yes_to_file(out: &Path, duration: Duration) -> u64 {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec yes '{LINE}' > '{}'", out.display()))
        .spawn()
        .expect("run yes");
    std::thread::sleep(duration);
    child.kill().expect("stop yes");
    child.wait().expect("reap yes");
    std::fs::metadata(out).expect("the output").len() / (LINE.len() as u64 + 1)
}

/// User and system time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    field(11) + field(12)
}

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 a second.
fn ticks_per_second() -> f64 {
    100.0
}
