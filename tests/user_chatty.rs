//! The test runner with a service that writes as fast as it can (tests/user_chatty/chatty.yaml,
//! its log capped at 2 files of 1 MiB): whichever process reads the service's output (this
//! one, or a supervisor under nextest) keeps its memory bounded, the log files keep to their
//! cap, and `Topology::logs` shows the latest lines after rotations.

#[path = "support/memory.rs"]
mod memory;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Topology, harness_test};
use memory::peak_rss_kib;

/// How long we wait for the log to rotate before failing: generous, for a loaded runner.
const WAIT: Duration = Duration::from_secs(60);

/// The number of a line of the service's (`line N ...`).
fn line_number(line: &str) -> Option<u64> {
    line.strip_prefix("line ")?.split(' ').next()?.parse().ok()
}

/// The number of the first line of a log file, if it has one.
fn first_number(path: &Path) -> Option<u64> {
    let text = std::fs::read(path).ok()?;
    let first = text.split(|&b| b == b'\n').next()?;
    line_number(std::str::from_utf8(first).ok()?)
}

/// The process that reads the service's output: the parent of the process that carries the
/// service's marker in its command line.
fn reader_of_the_service() -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if pid != std::process::id()
            && String::from_utf8_lossy(&cmdline).contains("harness-chatty-runner")
            && cmdline.starts_with(b"awk")
        {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("PPid in /proc/PID/status");
        }
    }
    panic!("no process of the chatty service");
}

#[harness_test(topology = "tests/user_chatty/chatty.yaml")]
async fn a_chatty_service_keeps_memory_and_its_log_bounded(topo: &Topology) {
    let dir = topo.state_dir().expect("the services' directory");
    let older = dir.join("chatty.log.1");
    // Rotated more than once, then once more: the older file's first line moves on.
    let deadline = Instant::now() + WAIT;
    let mut seen = None;
    loop {
        let first = first_number(&older);
        match (seen, first) {
            (None, Some(n)) if n > 0 => seen = Some(n),
            (Some(s), Some(n)) if n > s => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the log did not rotate");
        std::thread::sleep(Duration::from_millis(20));
    }

    let reader = reader_of_the_service();
    let peak = peak_rss_kib(reader);
    assert!(
        peak < 150 << 10,
        "the reader of the service's output (pid {reader}) peaked at {peak} KiB"
    );
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("chatty.log") {
            assert!(
                name == "chatty.log" || name == "chatty.log.1",
                "{name}: more files than max_files"
            );
            total += entry.metadata().unwrap().len();
        }
    }
    assert!(total <= 2 << 20, "the log files hold {total} bytes");

    let lines = topo.logs("chatty").expect("the service's lines");
    let numbers: Vec<u64> = lines
        .iter()
        .rev()
        .take(5)
        .filter_map(|l| line_number(&l.text))
        .collect();
    assert_eq!(
        numbers.len(),
        5,
        "{:?}",
        &lines[lines.len().saturating_sub(5)..]
    );
    assert!(
        numbers.windows(2).all(|w| w[0] == w[1] + 1),
        "the last lines are not consecutive: {numbers:?}"
    );
    assert!(
        numbers[0] > seen.unwrap(),
        "the last lines ({numbers:?}) are older than the rotated file's"
    );
}

harness::main!();
