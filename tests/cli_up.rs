//! `harness up` as a user runs it: the demo topology comes up, its table gives addresses that
//! answer, SIGTERM tears it down with exit code 0 and nothing left; a bad file is refused
//! before anything starts; a failing topology exits 1 naming the service, with its log tail.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use fixtures::{project_dir, topology_file};

/// How long we wait for a line or an exit before failing: generous, for a loaded 2-core CI
/// runner. Never a measurement.
const WAIT: Duration = Duration::from_secs(60);

/// `harness up ARGS` run from `project`, with its temporary files in `tmp` (so that the test
/// can check that the state directory is gone), stdout read line by line on a thread.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(project: &Path, tmp: &Path, args: &[&str]) -> Self {
        Self::start_with_overlay_env(project, tmp, args, None)
    }

    fn start_with_overlay_env(
        project: &Path,
        tmp: &Path,
        args: &[&str],
        overlay_env: Option<&str>,
    ) -> Self {
        let env: Vec<(&str, &str)> = overlay_env
            .map(|overlays| ("HARNESS_OVERLAY", overlays))
            .into_iter()
            .collect();
        Self::start_with_env(project, tmp, args, &env)
    }

    /// `harness up ARGS` in `project` with `env` set (and no `HARNESS_OVERLAY` or
    /// `HARNESS_BASE_DIR` of this run's unless `env` names them).
    fn start_with_env(project: &Path, tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
        command
            .env_remove("HARNESS_OVERLAY")
            .env_remove("HARNESS_BASE_DIR");
        command.envs(env.iter().copied());
        let mut child = command
            .arg("up")
            .args(args)
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
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stdout until a line starting with `prefix`; returns the lines before it.
    fn until(&mut self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let start = self.seen.len();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => {
                    let before = self.seen[start..].to_vec();
                    self.seen.push(line);
                    return before;
                }
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit; returns the code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return (status.code(), stderr);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("harness up did not exit within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test must not leave harness (and so its services) running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pids in `waiting for NAME (pid N...` lines.
fn waiting_pids(lines: &[String]) -> Vec<(String, u32)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("waiting for ")?;
            let (name, rest) = rest.split_once(" (pid ")?;
            let pid = rest.split([')', ';']).next()?.parse().ok()?;
            Some((name.to_string(), pid))
        })
        .collect()
}

fn assert_gone(pids: &[(String, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for (service, pid) in pids {
        let group = Pid::from_raw(*pid as i32).unwrap();
        while rustix::process::test_kill_process_group(group).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{service} (process group {pid}) is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

#[test]
fn up_runs_the_demo_until_sigterm_and_leaves_nothing() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let demo = topology_file("demo.yaml");
    let mut up = Up::start(project.path(), tmp.path(), &[demo.to_str().unwrap()]);
    let progress = up.until("SERVICE ");
    let table = up.until("harness up: all 4 services healthy");
    assert!(
        progress
            .iter()
            .any(|l| l.starts_with("waiting for kv-api (pid ")
                && l.ends_with("; depends on kv-store)")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|l| l.starts_with("web healthy after ") && l.ends_with(" ms")),
        "{progress:?}"
    );
    let pids = waiting_pids(&progress);
    assert_eq!(pids.len(), 4, "{progress:?}");

    // The table: one row per service, running, with an address that answers.
    assert_eq!(table.len(), 4, "{table:?}");
    let mut addrs = std::collections::HashMap::new();
    for row in &table {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["process", "running"], "{row}");
        let pid: u32 = cells[4].parse().unwrap();
        assert!(pids.contains(&(cells[0].to_string(), pid)), "{row}");
        addrs.insert(
            cells[0].to_string(),
            cells[3].parse::<SocketAddr>().unwrap(),
        );
    }
    let mut stream = TcpStream::connect(addrs["kv-api"]).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kv-api\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The request shows up in the followed logs, prefixed with the service's name.
    up.until("kv-api   | kv-server: 127.0.0.1:");

    terminate(&up);
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_gone(&pids);
    assert_empty(tmp.path());
}

/// `HARNESS_BASE_DIR` moves the base directory of `harness up` as it does a suite's: run from
/// an empty directory, the demo's `./target/debug/...` binaries are found under it.
#[test]
fn up_resolves_relative_paths_against_harness_base_dir() {
    let project = project_dir();
    let elsewhere = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let demo = topology_file("demo.yaml");
    let base = project.path().to_str().unwrap();
    let mut up = Up::start_with_env(
        elsewhere.path(),
        tmp.path(),
        &[demo.to_str().unwrap()],
        &[("HARNESS_BASE_DIR", base)],
    );
    let progress = up.until("harness up: all 4 services healthy");
    terminate(&up);
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_gone(&waiting_pids(&progress));
    assert_empty(tmp.path());
}

#[test]
fn up_refuses_a_bad_file_before_starting_anything() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("bad.yaml"),
        "services:\n  db:\n    target: { process: { binary: ./target/debug/echo-server } }\n    dependecies: []\n",
    )
    .unwrap();
    let up = Up::start(project.path(), tmp.path(), &["bad.yaml"]);
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(125), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:4:5: unknown field `dependecies`, did you mean `dependencies`?"),
        "{stderr}"
    );
    assert_empty(tmp.path());
}

#[test]
fn up_exits_1_naming_the_failing_service_with_its_log_tail() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let failing = topology_file("failing.yaml");
    let mut up = Up::start(project.path(), tmp.path(), &[failing.to_str().unwrap()]);
    let progress = up.until("healthy stopped");
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("harness up: failed to start service broken (")
            && stderr.contains("health check failed after"),
        "{stderr}"
    );
    assert!(
        stderr.contains("last lines of its output:\n  | failing-service:"),
        "{stderr}"
    );
    let pids = waiting_pids(&progress);
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["healthy", "broken"], "{progress:?}");
    assert_gone(&pids);
    assert_empty(tmp.path());
}

fn terminate(up: &Up) {
    rustix::process::kill_process(Pid::from_raw(up.child.id() as i32).unwrap(), Signal::TERM)
        .unwrap();
}

#[test]
fn sigterm_during_the_start_stops_what_was_started() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    let failing = topology_file("failing.yaml");
    let mut up = Up::start(project.path(), tmp.path(), &[failing.to_str().unwrap()]);
    // `broken` stays unhealthy for its whole start period: time enough to interrupt it.
    let mut progress = up.until("waiting for broken");
    progress.push(up.seen.last().unwrap().clone());
    terminate(&up);
    up.until("harness up: received SIGTERM during the start");
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let pids = waiting_pids(&progress);
    assert_eq!(pids.len(), 2, "{progress:?}");
    assert_gone(&pids);
    assert_empty(tmp.path());
}

#[test]
fn overlays_from_the_flag_and_the_environment_apply() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    // One overlay drops `web`, the other `echo`; what is left is the kv chain.
    std::fs::write(
        project.path().join("no-web.yaml"),
        "services:\n  web: null\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("no-echo.yaml"),
        "services:\n  echo: null\n",
    )
    .unwrap();
    let demo = topology_file("demo.yaml");
    let mut up = Up::start_with_overlay_env(
        project.path(),
        tmp.path(),
        &[demo.to_str().unwrap(), "--overlay", "no-echo.yaml"],
        Some("no-web.yaml"),
    );
    let progress = up.until("SERVICE ");
    let table = up.until("harness up: all 2 services healthy");
    let names: Vec<&str> = table
        .iter()
        .map(|row| row.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["kv-store", "kv-api"]);
    terminate(&up);
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_gone(&waiting_pids(&progress));
    assert_empty(tmp.path());
}

#[test]
fn up_runs_a_job_to_completion_before_its_dependent_and_says_so() {
    let project = project_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("jobs.yaml"),
        "services:
  seed:
    job: true
    target: { process: { binary: sh, args: [-c, \"echo seeding; echo seeded\"] } }
  web:
    target: { process: { binary: ./target/debug/http-health, env: { SERVICE_NAME: web } } }
    dependencies: [seed]
    port: auto
    health_check: { http: { path: /health } }
",
    )
    .unwrap();
    let mut up = Up::start(project.path(), tmp.path(), &["jobs.yaml"]);
    let progress = up.until("SERVICE ");
    assert!(
        progress
            .iter()
            .any(|l| l.starts_with("seed completed after ")),
        "{progress:?}"
    );
    let seed_done = progress
        .iter()
        .position(|l| l.starts_with("seed completed"));
    let web_started = progress
        .iter()
        .position(|l| l.starts_with("waiting for web"));
    assert!(seed_done < web_started, "{progress:?}");
    let table = up.until("harness up: all 1 service healthy and 1 job completed");
    assert!(
        table.iter().any(|row| row
            .split_whitespace()
            .take(3)
            .eq(["seed", "process", "completed"])),
        "{table:?}"
    );
    terminate(&up);
    let (code, stderr) = up.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_gone(&waiting_pids(&progress));
    assert_empty(tmp.path());
}
