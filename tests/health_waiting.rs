//! What harness says while it waits for a service to become healthy, and what it shows when
//! one never does, through the library, the test runner (`tests/user_waiting.rs`) and
//! `harness up`, with the topologies of `tests/user_waiting/`:
//!
//! - `slow.yaml`: `slow` is healthy after 3 s and is reported while it is waited for, with its
//!   check, a try count and the last failure; `quick` is healthy at once and never reported.
//!   The reports go to stderr; stdout keeps only the runner's results (valid JSON under
//!   `--format json`) or `harness up`'s table and logs.
//! - `never.yaml`: `never` writes three lines and fails a `command` check that writes 40 lines
//!   of noise; the failure shows the service's own lines first, then the check's exit status
//!   and reason, and only the check's last lines.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use harness::orchestrator::{
    CHECK_OUTPUT_LINES, Progress, ServiceManager, WAIT_REPORT_AFTER, WaitReport,
};
use harness::registry::Registry;
use harness::topology::TopologyConfig;
use rustix::process::{Pid, Signal};

use fixtures::{project_dir, test_binary, workspace_dir};

/// How long we wait for a line or an exit before failing: generous, for a loaded 2-core CI
/// runner. Never a measurement.
const WAIT: Duration = Duration::from_secs(60);

/// The start of the line that reports `slow` while it is waited for.
const SLOW_WAITING: &str = "harness: waiting for slow: http GET http://127.0.0.1:";

/// A topology of `tests/user_waiting/`.
fn waiting_file(name: &str) -> PathBuf {
    workspace_dir().join("tests/user_waiting").join(name)
}

/// The lines of `text` that start with `prefix`.
fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// Asserts that `text` reports `slow` while it waited (`try N (S s), last: ... 503`), and never
/// `quick`.
fn assert_reports_slow_only(text: &str) {
    let reports = lines_starting(text, SLOW_WAITING);
    assert!(!reports.is_empty(), "no report of slow in:\n{text}");
    for report in &reports {
        assert!(report.contains("/health, try "), "{report}");
        assert!(
            report.contains(" s), last: GET http://127.0.0.1:"),
            "{report}"
        );
        assert!(
            report.ends_with("/health answered 503, expected 200"),
            "{report}"
        );
    }
    assert!(!text.contains("waiting for quick"), "{text}");
}

/// Asserts that a failure report for `never` shows its own lines, then the last check's
/// reason, then only the check's last lines of output.
fn assert_shows_own_lines_then_the_last_check(message: &str) {
    let lines: Vec<&str> = message.lines().collect();
    let find = |wanted: &str| {
        lines
            .iter()
            .position(|l| l.contains(wanted))
            .unwrap_or_else(|| panic!("no line with {wanted:?} in:\n{message}"))
    };
    let reason = find("health check failed after");
    assert!(
        lines[reason].ends_with("exited with code 3: check says: not ready"),
        "{message}"
    );
    let own: Vec<usize> = (1..=3)
        .map(|i| find(&format!("| never: own line {i}")))
        .collect();
    let noise: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("> check noise"))
        .collect();
    assert!(own.is_sorted(), "{message}");
    assert!(
        noise.first().is_some_and(|&first| first > own[2]),
        "the service's own lines come before the check's:\n{message}"
    );
    assert_eq!(noise.len(), CHECK_OUTPUT_LINES - 1, "{message}");
    assert!(lines[noise[0]].ends_with("> check noise 32"), "{message}");
    assert!(
        lines[noise[noise.len() - 1] + 1].contains("> check says: not ready"),
        "{message}"
    );
}

#[test]
fn the_manager_reports_a_slow_service_while_it_waits_and_a_quick_one_never() {
    let project = project_dir();
    let topology = TopologyConfig::load(waiting_file("slow.yaml")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let manager = ServiceManager::new(topology, Registry::new())
        .with_base_dir(project.path())
        .with_progress(move |p| record.lock().unwrap().push(p.clone()));
    smol::block_on(async {
        manager.start_all().await.unwrap();
        manager.stop_all().await.unwrap();
    });
    let seen = seen.lock().unwrap();
    let reports: Vec<&WaitReport> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::StillWaiting(report) => Some(report),
            _ => None,
        })
        .collect();
    assert!(!reports.is_empty(), "{seen:?}");
    for report in &reports {
        assert_eq!(report.service, "slow", "{report:?}");
        assert!(
            report.check.starts_with("http GET http://127.0.0.1:")
                && report.check.ends_with("/health"),
            "{report:?}"
        );
        assert!(report.tries > 1, "{report:?}");
        assert!(report.waited >= WAIT_REPORT_AFTER, "{report:?}");
        assert!(
            report.last_error.ends_with("answered 503, expected 200"),
            "{report:?}"
        );
    }
    // Between its start and its health, in order.
    let at = |wanted: &dyn Fn(&Progress) -> bool| seen.iter().position(wanted).unwrap();
    let waiting = at(&|p| matches!(p, Progress::Waiting { service, .. } if service == "slow"));
    let report = at(&|p| matches!(p, Progress::StillWaiting(_)));
    let healthy = at(&|p| matches!(p, Progress::Healthy { service, .. } if service == "slow"));
    assert!(waiting < report && report < healthy, "{seen:?}");
}

#[test]
fn the_runner_reports_waiting_on_stderr_and_a_failure_with_the_services_own_lines() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(test_binary("user_waiting"))
        .args(["--format", "json", "--test-threads", "1"])
        .env("HARNESS_WAITING_SUITE", "1")
        .env("HARNESS_BASE_DIR", project.path())
        .env("TMPDIR", tmp.path())
        // Run as cargo test runs it: under nextest this process's run id would make the suite
        // share through a supervisor, whose stderr is its log file.
        .env_remove("NEXTEST_RUN_ID")
        .current_dir(workspace_dir())
        .output()
        .expect("run the suite");
    let both = fixtures::both(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(101), "{both}");

    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{both}")))
        .collect();
    let outcome = |name: &str| {
        events
            .iter()
            .find(|e| e["type"] == "test" && e["name"] == name && e["event"] != "started")
            .unwrap_or_else(|| panic!("no outcome of {name}:\n{both}"))
    };
    assert_eq!(outcome("waits_for_a_slow_service")["event"], "ok", "{both}");
    let failed = outcome("never_starts");
    assert_eq!(failed["event"], "failed", "{both}");

    assert!(!stdout.contains("waiting for"), "{both}");
    assert_reports_slow_only(&stderr);
    let never = lines_starting(&stderr, "harness: waiting for never: command /bin/sh -c ");
    assert!(
        never
            .iter()
            .all(|l| l.ends_with("exited with code 3: check says: not ready")),
        "{both}"
    );
    assert!(!never.is_empty(), "{both}");

    let message = failed["stdout"].as_str().unwrap();
    assert!(
        message.contains("start topology ") && message.contains("start service never ("),
        "{message}"
    );
    assert_shows_own_lines_then_the_last_check(message);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// `harness up FILE` run from `project`, its stdout read line by line and its stderr
/// collected, each on a thread.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Up {
    fn start(project: &Path, tmp: &Path, file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("up")
            .arg(file)
            .env_remove("HARNESS_OVERLAY")
            .current_dir(project)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run harness up");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout until a line starting with `prefix`.
    fn until(&mut self, prefix: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout so far:\n{}\nstderr:\n{}",
                    self.stdout.join("\n"),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for the exit; returns the code, all of stdout and stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "harness up did not exit within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers end at the end of their pipes, soon after the exit.
        let mut stdout = std::mem::take(&mut self.stdout);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push(line);
        }
        let stderr_done = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < stderr_done {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), stdout.join("\n"), stderr)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test must not leave harness (and so its services) running.
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(&self.child);
            let _ = self.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    rustix::process::kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
}

#[test]
fn up_reports_a_slow_service_on_stderr_while_it_waits() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut up = Up::start(project.path(), tmp.path(), &waiting_file("slow.yaml"));
    up.until("harness up: all 2 services healthy");
    terminate(&up.child);
    let (code, stdout, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stdout}\n--- stderr ---\n{stderr}");
    assert_reports_slow_only(&stderr);
    assert!(!stdout.contains("harness: waiting for"), "{stdout}");
    assert!(stdout.contains("\nslow healthy after "), "{stdout}");
}

#[test]
fn up_shows_a_never_healthy_services_own_lines_and_its_last_check() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(project.path(), tmp.path(), &waiting_file("never.yaml"));
    let (code, stdout, stderr) = up.finish();
    assert_eq!(code, Some(1), "{stdout}\n--- stderr ---\n{stderr}");
    let failure = stderr
        .find("harness up: failed to start service never (")
        .map(|at| &stderr[at..])
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_shows_own_lines_then_the_last_check(failure);
    // Reported while it was waited for, with the command's exit code and last line.
    let waiting = lines_starting(&stderr, "harness: waiting for never: command /bin/sh -c ");
    assert!(!waiting.is_empty(), "{stderr}");
    assert!(
        waiting[0].contains(", try ")
            && waiting[0].ends_with("exited with code 3: check says: not ready"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// Runs `harness down` with the state root `state` when dropped, so that a failed test leaves
/// no detached run behind.
struct Down<'a> {
    project: &'a Path,
    state: &'a Path,
}

impl Down<'_> {
    fn run(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("down")
            .current_dir(self.project)
            .env("HARNESS_STATE_DIR", self.state)
            .stdin(Stdio::null())
            .output()
            .expect("run harness down")
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.run();
    }
}

#[test]
fn up_d_passes_the_reports_of_a_slow_service_on_before_it_returns() {
    let project = project_dir();
    let state = tempfile::tempdir().unwrap();
    let down = Down {
        project: project.path(),
        state: state.path(),
    };
    let up = Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("up")
        .arg("-d")
        .arg(waiting_file("slow.yaml"))
        .current_dir(project.path())
        .env("HARNESS_STATE_DIR", state.path())
        .env_remove("HARNESS_OVERLAY")
        .stdin(Stdio::null())
        .output()
        .expect("run harness up -d");
    let both = fixtures::both(&up);
    assert_eq!(up.status.code(), Some(0), "{both}");
    assert_reports_slow_only(&String::from_utf8_lossy(&up.stderr));
    assert!(
        !String::from_utf8_lossy(&up.stdout).contains("harness: waiting for"),
        "{both}"
    );
    let stopped = down.run();
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        fixtures::both(&stopped)
    );
}
