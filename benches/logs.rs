//! What a service that writes as fast as it can costs harness: a `process:` service running
//! `yes '<a 70-character line>'` under `harness up -d` for `LOGS_BENCH_SECS` seconds (default
//! 5), with the default log cap (64 MiB x 3 files). It prints the supervisor's peak resident
//! memory (`VmHWM`) and CPU time, and the lines per second that reached the service's log
//! files, next to `yes '<the same line>' > FILE` in the same directory (so on the same disk)
//! for the same time, and the ratio of the two.
//!
//! The bytes harness wrote are counted across rotations: every file of the log is looked at
//! every few milliseconds and each one's largest size seen is summed (a file lives for three
//! rotations, far longer than that). The baseline stops early once its file holds
//! `LOGS_BENCH_MAX_BYTES` (default 1 GiB), so that it cannot fill the disk; its rate is what it
//! wrote over the time it ran.
//!
//! Run: `cargo bench --bench logs` (release).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The line both writers repeat: 70 characters (71 bytes with its newline).
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567";

fn main() {
    let secs: u64 = env_number("LOGS_BENCH_SECS", 5);
    let max_bytes: u64 = env_number("LOGS_BENCH_MAX_BYTES", 1 << 30);
    let duration = Duration::from_secs(secs);
    let dir = tempfile::Builder::new()
        .prefix("harness-logs-bench-")
        .tempdir()
        .expect("a temporary directory");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("create the state directory");

    let harness = run_harness(dir.path(), &state, duration);
    let baseline = run_yes(dir.path(), duration, max_bytes);

    let per_line = (LINE.len() + 1) as f64;
    let harness_rate = harness.bytes as f64 / per_line / harness.elapsed.as_secs_f64();
    let yes_rate = baseline.bytes as f64 / per_line / baseline.elapsed.as_secs_f64();
    println!("a service writing `yes '<70 characters>'` as fast as it can, for {secs} s:");
    println!(
        "{:>26} {:>14} {:>12} {:>12} {:>16}",
        "", "lines/s", "MiB/s", "peak RSS", "CPU"
    );
    println!(
        "{:>26} {:>14.0} {:>12.1} {:>9} MB {:>13.2} s",
        "harness up -d (supervisor)",
        harness_rate,
        harness.bytes as f64 / harness.elapsed.as_secs_f64() / (1 << 20) as f64,
        harness.peak_rss_kib / 1024,
        harness.cpu_secs,
    );
    println!(
        "{:>26} {:>14.0} {:>12.1} {:>12} {:>16}",
        "yes > file",
        yes_rate,
        baseline.bytes as f64 / baseline.elapsed.as_secs_f64() / (1 << 20) as f64,
        "-",
        "-",
    );
    println!(
        "ratio harness / yes > file: {:.3}; log files at the end: {} bytes (cap {} bytes)",
        harness_rate / yes_rate,
        harness.kept,
        3u64 * (64 << 20)
    );
}

/// What `harness up -d` sustained.
struct HarnessRun {
    /// Bytes written to the log files in all, across rotations.
    bytes: u64,
    /// Bytes in the log files at the end.
    kept: u64,
    elapsed: Duration,
    peak_rss_kib: u64,
    cpu_secs: f64,
}

/// Starts the chatty service under `harness up -d`, watches its log for `duration`, then reads
/// the supervisor's peak memory and CPU time and stops the run.
fn run_harness(project: &Path, state: &Path, duration: Duration) -> HarnessRun {
    let file = project.join("chatty.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  chatty:\n    target:\n      process:\n        binary: sh\n        \
             args: [\"-c\", \"exec yes '{LINE}'\"]\n"
        ),
    )
    .expect("write the topology");
    let harness = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(args)
            .current_dir(project)
            .env("HARNESS_STATE_DIR", state)
            .env_remove("HARNESS_LOG_MAX_SIZE")
            .env_remove("HARNESS_LOG_MAX_FILES")
            .stdin(Stdio::null())
            .output()
            .expect("run harness");
        assert!(out.status.success(), "harness {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let up = harness(&["up", "-d", file.to_str().expect("a UTF-8 path")]);
    let supervisor: u32 = up
        .split("(supervisor pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no supervisor pid in {up}"));
    let run = std::fs::read_dir(state)
        .expect("read the state directory")
        .next()
        .expect("a run directory")
        .expect("a run directory")
        .path();
    let log = run.join("services").join("chatty.log");
    let files = [
        log.clone(),
        log.with_extension("log.1"),
        log.with_extension("log.2"),
    ];

    // The largest size seen of every file the log was kept in, by inode.
    let mut sizes: HashMap<(u64, u64), u64> = HashMap::new();
    let look = |sizes: &mut HashMap<(u64, u64), u64>| {
        for file in &files {
            if let Ok(meta) = std::fs::metadata(file) {
                let size = sizes.entry((meta.dev(), meta.ino())).or_default();
                *size = (*size).max(meta.len());
            }
        }
    };
    look(&mut sizes);
    let at_start: u64 = sizes.values().sum();
    let start = Instant::now();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(5));
        look(&mut sizes);
    }
    let elapsed = start.elapsed();
    look(&mut sizes);
    let bytes = sizes.values().sum::<u64>() - at_start;
    let kept = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let status =
        std::fs::read_to_string(format!("/proc/{supervisor}/status")).expect("read its status");
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    let cpu_secs = cpu_seconds(supervisor);
    harness(&["down"]);
    HarnessRun {
        bytes,
        kept,
        elapsed,
        peak_rss_kib,
        cpu_secs,
    }
}

/// What `yes > FILE` sustained.
struct Baseline {
    bytes: u64,
    elapsed: Duration,
}

/// Runs `yes LINE > FILE` in `dir` for `duration`, or until the file holds `max_bytes`.
fn run_yes(dir: &Path, duration: Duration, max_bytes: u64) -> Baseline {
    let path = dir.join("yes.out");
    let out = std::fs::File::create(&path).expect("create the baseline's file");
    let mut yes = Command::new("yes")
        .arg(LINE)
        .stdout(out)
        .spawn()
        .expect("run yes");
    let start = Instant::now();
    while start.elapsed() < duration && std::fs::metadata(&path).map_or(0, |m| m.len()) < max_bytes
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = yes.kill();
    let _ = yes.wait();
    let elapsed = start.elapsed();
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&path);
    Baseline { bytes, elapsed }
}

/// A process's user and system CPU time so far, in seconds (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (which may hold spaces) begin after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux that harness runs on.
    ticks as f64 / 100.0
}

/// A number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
