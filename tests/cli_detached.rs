//! `harness up -d`, `status`, `logs`, `down` as a user runs them: the demo topology comes up
//! under a detached supervisor and `up -d` returns; `status` shows addresses that answer;
//! `logs` shows and follows a service's output; `down` leaves nothing; a second `up -d` is
//! refused; a supervisor killed with SIGKILL takes its services along and `status` cleans up
//! after it; a failing start exits 1 with the log tail; `--api` serves the live topology; a
//! registry that cannot be saved (its state directory on a full tmpfs) is reported in the
//! supervisor's log and by `status`, which also checks that a running service's process is
//! still that process.

#[path = "support/fixtures.rs"]
mod fixtures;

#[path = "support/memory.rs"]
mod memory;

mod api_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api_support::Client;
use rustix::process::{Pid, Signal};
use serde_json::json;

use fixtures::{project_dir, topology_file};
use memory::peak_rss_kib;

/// How long we wait for a line before failing: generous, for a loaded 2-core CI runner.
const WAIT: Duration = Duration::from_secs(60);

/// A project directory and a state root of the test's own. Dropping it kills any supervisor
/// left running (its services die with it), so a failed test leaves nothing behind.
struct Env {
    project: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            project: project_dir(),
            state: tempfile::Builder::new()
                .prefix("harness-state-")
                .tempdir()
                .unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
        command
            .args(args)
            .current_dir(self.project.path())
            .env("HARNESS_STATE_DIR", self.state.path())
            .env_remove("HARNESS_OVERLAY")
            .stdin(Stdio::null());
        command
    }

    /// Runs `harness ARGS` to its end. `up -d` must return although its supervisor goes on:
    /// it must not hand our pipes down to it.
    fn run(&self, args: &[&str]) -> Run {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args).output().expect("run harness");
        Run {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// `up -d FILE ARGS`, which must succeed; returns its output and the supervisor's pid.
    fn up(&self, file: &Path, args: &[&str]) -> (Run, u32) {
        let mut all = vec!["up", "-d", file.to_str().unwrap()];
        all.extend(args);
        let up = self.run(&all);
        assert_eq!(up.code, Some(0), "{up:?}");
        let pid = up
            .stdout
            .split("(supervisor pid ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no supervisor pid in {up:?}"));
        (up, pid)
    }

    /// `status`'s rows: service name to (state, address, pid), checking that each runs as a
    /// process.
    fn status(&self) -> (Run, HashMap<String, (String, String, String)>) {
        let status = self.run(&["status"]);
        let rows = status
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("SERVICE "))
            .skip(1)
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(cells[1], "process", "{l}");
                (
                    cells[0].to_string(),
                    (
                        cells[2].to_string(),
                        cells[3].to_string(),
                        cells[4].to_string(),
                    ),
                )
            })
            .collect();
        (status, rows)
    }

    fn assert_state_empty(&self) {
        let left: Vec<_> = std::fs::read_dir(self.state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left in the state directory: {left:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        kill_supervisors(self.state.path());
    }
}

/// Kills with SIGKILL every supervisor whose run is in the state root `root` (their services
/// die with them), and returns their pids.
fn kill_supervisors(root: &Path) -> Vec<u32> {
    let Ok(runs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for run in runs.flatten() {
        let Ok(text) = std::fs::read_to_string(run.path().join("run")) else {
            continue;
        };
        let pid = text
            .lines()
            .find_map(|l| l.strip_prefix("pid="))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && let Some(raw) = Pid::from_raw(pid as i32)
        {
            let _ = rustix::process::kill_process(raw, Signal::KILL);
            killed.push(pid);
        }
    }
    killed
}

/// One finished `harness` command.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Whether a process is gone: no such pid, or only its zombie is left.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn assert_gone_within(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    for &pid in pids {
        while !gone(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} still runs after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A running `harness` command (`logs -f`, a foreground `up`), its stdout read line by line on
/// a thread; killed when dropped.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn spawn(mut command: Command) -> Follow {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow { child, lines }
    }

    /// Reads stdout until a line of the chatty service's numbered beyond `number`.
    fn until_line_beyond(&self, number: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line beyond {number} was printed"));
            if line_number(&line).is_some_and(|n| n > number) {
                return;
            }
        }
    }

    /// Reads stdout until a line containing `what`, and returns that line.
    fn until(&self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("`harness logs -f` printed no line with {what:?}"),
            }
        }
    }
}

/// Sends SIGTERM to a foreground `harness up` and waits for it to exit.
fn terminate(up: &mut Follow) -> std::process::ExitStatus {
    rustix::process::kill_process(Pid::from_child(&up.child), Signal::TERM).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "harness up did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn up_d_returns_healthy_and_status_logs_down_work_against_the_run() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let (up, supervisor) = env.up(&demo, &[]);
    assert!(
        up.stdout
            .lines()
            .any(|l| l.starts_with("waiting for kv-api (pid ")
                && l.ends_with("; depends on kv-store)")),
        "{up:?}"
    );
    assert!(
        up.stdout
            .contains("harness up: all 4 services healthy; running in the background"),
        "{up:?}"
    );

    let (status, rows) = env.status();
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(
        status.stdout.starts_with(&format!(
            "{} (supervisor pid {supervisor}, up ",
            demo.canonicalize().unwrap().display()
        )),
        "{status:?}"
    );
    // In the topology's order.
    let names: Vec<&str> = status
        .stdout
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["kv-store", "kv-api", "echo", "web"], "{status:?}");
    let mut pids = vec![supervisor];
    for (name, (state, addr, pid)) in &rows {
        assert_eq!(state, "running", "{name}: {status:?}");
        let addr: SocketAddr = addr.parse().unwrap();
        if name == "echo" {
            TcpStream::connect(addr).unwrap();
        } else {
            let answer = http_get(addr, "/health");
            assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
        }
        pids.push(pid.parse().unwrap());
    }

    let logs = env.run(&["logs", "kv-api"]);
    assert_eq!(logs.code, Some(0), "{logs:?}");
    assert!(
        logs.stdout.contains("kv-server: listening on ")
            && logs.stdout.contains("GET /health -> 200"),
        "{logs:?}"
    );
    let unknown = env.run(&["logs", "nope"]);
    assert_eq!(unknown.code, Some(125), "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("no service named nope is running; running services: echo, kv-api"),
        "{unknown:?}"
    );

    // `logs -f` shows a line the service writes after it started following.
    let follow = Follow::spawn(env.command(&["logs", "kv-api", "-f", "-n", "1"]));
    // The last line so far: from now on `logs -f` follows.
    follow.until("kv-server: ");
    // A path nobody else asks for, so the line can only come from this request.
    let kv_api: SocketAddr = rows["kv-api"].1.parse().unwrap();
    let answer = http_get(kv_api, "/kv/followed");
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    follow.until("/kv/followed");

    // A second `up -d` of the same file is refused, naming the running supervisor.
    let again = env.run(&["up", "-d", demo.to_str().unwrap()]);
    assert_eq!(again.code, Some(4), "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("is already running (supervisor pid {supervisor};")),
        "{again:?}"
    );

    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(
        down.stdout.starts_with("harness down: stopped ")
            && down
                .stdout
                .contains("(kv-store, kv-api, echo, web; supervisor pid "),
        "{down:?}"
    );
    // `down` returns once the supervisor is gone; its services went before it.
    assert_gone_within(&pids, Duration::from_secs(5));
    // `logs -f` ends by itself once the run is gone.
    let mut follow = follow;
    let deadline = Instant::now() + WAIT;
    let followed = loop {
        if let Some(status) = follow.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`logs -f` still runs after `down`"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(followed.code(), Some(0));
    env.assert_state_empty();
    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(3), "{status:?}");
    assert_eq!(status.stdout, "harness status: nothing is running\n");
    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(3), "{down:?}");
}

#[test]
fn a_killed_supervisor_takes_its_services_along_and_status_cleans_up() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let (_, supervisor) = env.up(&demo, &[]);
    let (_, rows) = env.status();
    let pids: Vec<u32> = rows.values().map(|r| r.2.parse().unwrap()).collect();
    assert_eq!(pids.len(), 4, "{rows:?}");

    rustix::process::kill_process(Pid::from_raw(supervisor as i32).unwrap(), Signal::KILL).unwrap();
    assert_gone_within(&pids, Duration::from_secs(5));

    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(3), "{status:?}");
    assert!(
        status.stdout.contains(&format!(
            "removed the stale run of {} (its supervisor, pid {supervisor}, is gone, and its \
             services died with it)",
            demo.canonicalize().unwrap().display()
        )),
        "{status:?}"
    );
    assert!(
        status
            .stdout
            .ends_with("harness status: nothing is running\n"),
        "{status:?}"
    );
    env.assert_state_empty();
}

#[test]
fn a_failed_detached_start_exits_1_with_the_log_tail_and_leaves_nothing() {
    let env = Env::new();
    let failing = topology_file("failing.yaml");
    let up = env.run(&["up", "-d", failing.to_str().unwrap()]);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr
            .contains("harness up: failed to start service broken (")
            && up.stderr.contains("health check failed after")
            && up
                .stderr
                .contains("last lines of its output:\n  | failing-service:"),
        "{up:?}"
    );
    assert!(up.stdout.contains("healthy stopped"), "{up:?}");
    let pids: Vec<u32> = up
        .stdout
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" (pid ")?.1;
            rest.split([')', ';']).next()?.parse().ok()
        })
        .collect();
    assert_eq!(pids.len(), 2, "{up:?}");
    assert_gone_within(&pids, Duration::from_secs(10));
    env.assert_state_empty();
}

#[test]
fn the_api_of_a_detached_run_lists_and_restarts_its_services() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    // The token file does not exist: `up -d` generates it, and the supervisor requires it.
    let token_file = env.project.path().join("api.token");
    let (up, supervisor) = env.up(
        &demo,
        &[
            "--api",
            "127.0.0.1:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let api: SocketAddr = up
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("harness up: API listening on ws://"))
        .unwrap_or_else(|| panic!("no API address in {up:?}"))
        .parse()
        .unwrap();
    let (status, rows) = env.status();
    assert!(
        status.stdout.contains(&format!("api ws://{api})")),
        "{status:?}"
    );
    let old_pid = rows["echo"].2.clone();

    let new_pid = smol::block_on(async {
        let refused = api_support::try_connect(api, "/", &[]).await.err();
        assert_eq!(refused.map(|(status, _)| status), Some(401));
        let bearer = format!("Bearer {}", token.trim());
        let mut client = api_support::try_connect(api, "/", &[("Authorization", &bearer)])
            .await
            .unwrap_or_else(|(status, body)| panic!("refused with {status}: {body}"));
        let listed = client.ok("list_services", json!({})).await;
        let names: Vec<&str> = listed["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "kv-api", "kv-store", "web"], "{listed}");
        let restarted = client
            .ok(
                "service_action",
                json!({"service": "echo", "action": "restart"}),
            )
            .await;
        assert_eq!(
            restarted["service"]["state"],
            json!({"status": "running"}),
            "{restarted}"
        );
        let new_pid = restarted["service"]["execution"]["pid"].to_string();
        assert_ne!(new_pid, old_pid, "{restarted}");
        client.close().await;
        new_pid
    });

    // The registry file is saved within the autosave's debounce (200 ms) of the restart; until
    // then `status` shows the old process, which is gone (dead).
    let mut rows = env.status().1;
    wait_until("status does not show the restarted echo", || {
        rows = env.status().1;
        rows["echo"].2 == new_pid
    });
    // The restarted service answers, and `down` stops it too.
    assert_eq!(rows["echo"].0, "running", "{rows:?}");
    TcpStream::connect(rows["echo"].1.parse::<SocketAddr>().unwrap()).unwrap();
    let new_pid: u32 = new_pid.parse().unwrap();
    let down = env.run(&["down", demo.to_str().unwrap()]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_gone_within(&[supervisor, new_pid], Duration::from_secs(5));
    env.assert_state_empty();
}

#[test]
fn a_foreground_up_serves_events_and_service_actions_over_the_api() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let mut command = env.command(&["up", demo.to_str().unwrap(), "--api", "127.0.0.1:0"]);
    // The run's temporary state directory goes there, so that we can see it removed.
    command.env("TMPDIR", env.state.path());
    let mut up = Follow::spawn(command);
    let api: SocketAddr = up
        .until("harness up: API listening on ws://")
        .trim_start_matches("harness up: API listening on ws://")
        .parse()
        .unwrap();
    up.until("harness up: all 4 services healthy");

    smol::block_on(async {
        let mut client = Client::connect(api).await;
        let hello = client.ok("hello", json!({})).await;
        assert_eq!(hello["controller"], true, "{hello}");
        client
            .ok(
                "subscribe",
                json!({"services": ["echo"], "events": ["service_state_changed"]}),
            )
            .await;
        let stopped = client
            .ok(
                "service_action",
                json!({"service": "echo", "action": "stop"}),
            )
            .await;
        assert_eq!(stopped["service"]["state"], json!({"status": "stopped"}));
        let started = client
            .ok(
                "service_action",
                json!({"service": "echo", "action": "start"}),
            )
            .await;
        assert_eq!(started["service"]["state"], json!({"status": "running"}));
        let mut seen = Vec::new();
        for _ in 0..4 {
            let event = client.event().await;
            assert_eq!(event["params"]["service"], "echo", "{event}");
            seen.push(
                event["params"]["to"]["status"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(seen, ["stopping", "stopped", "starting", "running"]);
        client.close().await;
    });

    assert_eq!(terminate(&mut up).code(), Some(0));
    env.assert_state_empty();
}

#[test]
fn up_d_takes_over_from_a_killed_supervisor() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let (_, first) = env.up(&demo, &[]);
    rustix::process::kill_process(Pid::from_raw(first as i32).unwrap(), Signal::KILL).unwrap();
    assert_gone_within(&[first], Duration::from_secs(5));

    let (up, second) = env.up(&demo, &[]);
    assert!(
        up.stdout.starts_with(&format!(
            "harness up: removing the stale run of {} (its supervisor, pid {first}, is gone",
            demo.canonicalize().unwrap().display()
        )),
        "{up:?}"
    );
    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(
        down.stdout.contains(&format!("supervisor pid {second})")),
        "{down:?}"
    );
    env.assert_state_empty();
}

#[test]
fn several_runs_are_told_apart_by_their_file() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    std::fs::write(
        env.project.path().join("no-web.yaml"),
        "services:\n  web: null\n",
    )
    .unwrap();
    // The same file with an overlay is another run, beside the first.
    env.up(&demo, &[]);
    env.up(&demo, &["--overlay", "no-web.yaml"]);

    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    let headers: Vec<&str> = status
        .stdout
        .lines()
        .filter(|l| l.contains("(supervisor pid "))
        .collect();
    assert_eq!(headers.len(), 2, "{status:?}");
    assert!(
        headers.iter().any(|h| h.contains(" --overlay ")),
        "{status:?}"
    );

    let ambiguous = env.run(&["logs", "kv-store"]);
    assert_eq!(ambiguous.code, Some(125), "{ambiguous:?}");
    assert!(
        ambiguous
            .stderr
            .contains("service kv-store runs in several topologies"),
        "{ambiguous:?}"
    );
    // `web` runs in one of them only.
    let web = env.run(&["logs", "web"]);
    assert_eq!(web.code, Some(0), "{web:?}");

    let filtered = env.run(&["status", demo.to_str().unwrap()]);
    assert_eq!(filtered.code, Some(0), "{filtered:?}");
    assert_eq!(filtered.stdout.matches("(supervisor pid ").count(), 2);
    let other = env.run(&["status", topology_file("failing.yaml").to_str().unwrap()]);
    assert_eq!(other.code, Some(3), "{other:?}");
    assert!(
        other.stdout.ends_with("failing.yaml is not running\n"),
        "{other:?}"
    );

    let refused = env.run(&["down"]);
    assert_eq!(refused.code, Some(125), "{refused:?}");
    assert!(
        refused
            .stderr
            .starts_with("harness down: several topologies are running"),
        "{refused:?}"
    );
    let down = env.run(&["down", demo.to_str().unwrap()]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_eq!(
        down.stdout.matches("harness down: stopped ").count(),
        2,
        "{down:?}"
    );
    env.assert_state_empty();
}

/// A topology of two echo servers, written into the project: the smallest run whose registry
/// changes twice when its services die.
fn two_echoes(env: &Env) -> std::path::PathBuf {
    let file = env.project.path().join("echoes.yaml");
    let service = |name: &str| {
        format!(
            "  {name}:\n    target:\n      process:\n        binary: ./target/debug/echo-server\n        \
             args: [\"--port\", \"${{port}}\"]\n    port: auto\n"
        )
    };
    let text = format!("services:\n{}{}", service("echo-a"), service("echo-b"));
    std::fs::write(&file, text).unwrap();
    file
}

/// The only run directory in the state root.
fn run_dir(env: &Env) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(env.state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

/// Waits until `done`, failing after [`WAIT`] with `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tmpfs mounted over a directory for the length of a test. Dropping it kills the
/// supervisors that keep their runs on it (so that nothing holds it), then unmounts it, also
/// when the test failed halfway.
struct Tmpfs {
    point: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`) over `point`. Where mounting is not permitted (no root,
    /// a container without CAP_SYS_ADMIN) it says why and returns `None`, unless
    /// `HARNESS_REQUIRE_LAB=1`, where that is a failure.
    fn mount(point: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(point)
            .stdin(Stdio::null())
            .output();
        let reason = match out {
            Ok(out) if out.status.success() => {
                return Some(Tmpfs {
                    point: point.to_path_buf(),
                });
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        if std::env::var("HARNESS_REQUIRE_LAB").as_deref() == Ok("1") {
            panic!("HARNESS_REQUIRE_LAB=1 but a tmpfs cannot be mounted here: {reason}");
        }
        eprintln!("skipped: a tmpfs cannot be mounted here: {reason}");
        None
    }

    /// Fills the file system: writes a file until no byte more fits.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.point.join("filler")).unwrap();
        let block = [0u8; 4096];
        loop {
            match filler.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                    break;
                }
                Err(e) => panic!("fill {}: {e}", self.point.display()),
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let killed = kill_supervisors(&self.point);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !killed.iter().all(|&pid| gone(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Their services may still be closing their files: busy for a moment.
        loop {
            let unmounted = Command::new("umount")
                .arg(&self.point)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                return;
            }
            if Instant::now() >= deadline {
                // Detached now, freed once the last file on it is closed.
                let _ = Command::new("umount").arg("-l").arg(&self.point).status();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_registry_that_cannot_be_saved_is_reported_and_status_shows_the_dead_service() {
    let env = Env::new();
    let Some(tmpfs) = Tmpfs::mount(env.state.path(), "1m") else {
        return;
    };
    let echoes = two_echoes(&env);
    let (_, supervisor) = env.up(&echoes, &[]);
    let (status, rows) = env.status();
    assert!(!status.stdout.contains("warning"), "{status:?}");
    let pid = |name: &str| -> u32 { rows[name].2.parse().unwrap() };
    let (a, b) = (pid("echo-a"), pid("echo-b"));
    let dir = run_dir(&env);
    let registry = dir.join("registry.json");

    // A service dies with the disk full: the supervisor cannot save that it failed.
    tmpfs.fill();
    rustix::process::kill_process(Pid::from_raw(a as i32).unwrap(), Signal::KILL).unwrap();
    let log = || std::fs::read_to_string(dir.join("supervisor.err")).unwrap_or_default();
    wait_until("the supervisor logged no failed save", || {
        log().contains("could not be saved")
    });
    let logged = log();
    assert!(
        logged.contains(&format!(
            "harness up: warning: the registry could not be saved at {}: failed to ",
            registry.display()
        )) && logged.contains("No space left on device (os error 28)"),
        "{logged}"
    );

    // The second death fails to be saved the same way: not logged again.
    rustix::process::kill_process(Pid::from_raw(b as i32).unwrap(), Signal::KILL).unwrap();
    let out = || std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
    wait_until("the supervisor saw no end of echo-b", || {
        out().contains("echo-b was killed by signal 9")
    });
    // Past the autosave's debounce (200 ms), so that the save it caused was tried.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(log().matches("could not be saved").count(), 1, "{}", log());

    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    let warning = format!(
        "warning: the registry could not be saved at {}: failed to ",
        registry.display()
    );
    assert!(
        status
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&warning)
                && l.contains("No space left on device (os error 28)")
                && l.ends_with("; what it shows may be stale")),
        "{status:?}"
    );
    // The file still says running; status looks at the processes.
    let saved = std::fs::read_to_string(&registry).unwrap();
    assert_eq!(
        saved.matches("\"status\": \"running\"").count(),
        2,
        "{saved}"
    );
    for (name, pid) in [("echo-a", a), ("echo-b", b)] {
        assert!(
            status
                .stdout
                .lines()
                .any(|l| l.starts_with(name)
                    && l.contains(&format!(" dead (process {pid} is gone) "))),
            "{name}: {status:?}"
        );
    }

    // Stopping works on a full disk too, and leaves nothing.
    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_gone_within(&[supervisor], Duration::from_secs(5));
    let left: Vec<_> = std::fs::read_dir(env.state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["filler"], "left in the state directory");
}

#[test]
fn status_says_dead_when_a_service_s_pid_is_gone_or_another_process_s() {
    let env = Env::new();
    let echoes = two_echoes(&env);
    env.up(&echoes, &[]);
    let (_, rows) = env.status();
    let a: u32 = rows["echo-a"].2.parse().unwrap();
    let registry = run_dir(&env).join("registry.json");
    let original = std::fs::read_to_string(&registry).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&original).unwrap();
    let entry = |saved: &serde_json::Value| {
        saved["services"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["name"] == "echo-a")
            .unwrap()
    };
    let i = entry(&saved);
    // The start time recorded at the spawn is the process's own.
    let identity = harness::sys::ProcessIdentity::of(a).unwrap();
    assert_eq!(
        saved["services"][i]["execution"]["start_time"],
        json!(identity.start_time),
        "{original}"
    );

    // What the supervisor cannot tell: the registry names a process that is not echo-a's, as
    // when saving it failed after the service died. Written as the supervisor writes it.
    let rewrite = |pid: u32| {
        let mut edited = saved.clone();
        edited["services"][i]["execution"]["pid"] = json!(pid);
        let tmp = registry.with_extension("edited");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
        std::fs::rename(&tmp, &registry).unwrap();
    };
    let echo_a_state = || {
        let (status, rows) = env.status();
        assert_eq!(status.code, Some(0), "{status:?}");
        let line = status
            .stdout
            .lines()
            .find(|l| l.starts_with("echo-a "))
            .unwrap()
            .to_string();
        assert_eq!(rows["echo-b"].0, "running", "{status:?}");
        line
    };
    // A process that ended.
    let mut ended = Command::new("true").spawn().unwrap();
    let gone_pid = ended.id();
    ended.wait().unwrap();
    rewrite(gone_pid);
    let line = echo_a_state();
    assert!(
        line.contains(&format!(" dead (process {gone_pid} is gone) ")),
        "{line}"
    );
    // A live process, but not the one that was spawned: its pid was reused.
    rewrite(std::process::id());
    let line = echo_a_state();
    assert!(
        line.contains(&format!(" dead (process {} is gone) ", std::process::id())),
        "{line}"
    );
    // The real one is running.
    rewrite(a);
    let line = echo_a_state();
    assert!(line.contains(" running "), "{line}");

    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_state_empty();
}

/// A topology of one service that writes numbered lines (`line N` and 70 more characters) as
/// fast as it can, its log capped at 2 files of 1 MiB.
fn chatty(env: &Env) -> std::path::PathBuf {
    let file = env.project.path().join("chatty.yaml");
    let text = "services:\n  chatty:\n    target:\n      process:\n        binary: sh\n        \
        args: [\"-c\", \"exec awk 'BEGIN { for (i = 0; ; i++) printf \\\"line %d %s\\\\n\\\", i, \
        \\\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqr\\\" }'\"]\n    \
        logs: { max_size: 1M, max_files: 2 }\n";
    std::fs::write(&file, text).unwrap();
    file
}

/// The number of a chatty service's line (`line N ...`, after a prefix if any).
fn line_number(line: &str) -> Option<u64> {
    line.split("line ").nth(1)?.split(' ').next()?.parse().ok()
}

/// The numbers of the first and last whole lines of a log file, if it has any.
fn first_and_last(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut numbers = text.lines().filter_map(line_number);
    let first = numbers.next()?;
    Some((first, numbers.next_back().unwrap_or(first)))
}

/// A service that writes as fast as it can, under a detached supervisor: the supervisor's
/// memory stays bounded (the service waits on its pipe for the log writer), the log files keep
/// to their cap of 2 x 1 MiB and hold the newest lines in order, and `logs -n 5` and `logs -f`
/// show the latest lines after the file has rotated.
#[test]
fn a_chatty_service_keeps_the_supervisor_small_and_its_log_within_its_cap() {
    let env = Env::new();
    let (_, supervisor) = env.up(&chatty(&env), &[]);
    let services = run_dir(&env).join("services");
    let live = services.join("chatty.log");
    let older = services.join("chatty.log.1");
    // Rotated more than once: the older file no longer starts with the first line.
    wait_until("the log was not rotated twice", || {
        first_and_last(&older).is_some_and(|(first, _)| first > 0)
    });
    // Some more rotations, while the service goes on writing as fast as it can.
    let (_, seen) = first_and_last(&older).unwrap();
    wait_until("the log was not rotated again", || {
        first_and_last(&older).is_some_and(|(first, _)| first > seen)
    });

    let peak = peak_rss_kib(supervisor);
    assert!(
        peak < 150 << 10,
        "the supervisor's resident memory peaked at {peak} KiB"
    );
    let mut total = 0;
    for entry in std::fs::read_dir(&services).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("chatty.log") {
            assert!(
                name == "chatty.log" || name == "chatty.log.1",
                "{name}: more files than max_files"
            );
            let len = entry.metadata().unwrap().len();
            assert!(len <= 1 << 20, "{name} holds {len} bytes");
            total += len;
        }
    }
    assert!(total <= 2 << 20, "the log files hold {total} bytes");

    // The files hold consecutive lines: the older file ends where the live one begins.
    let (_, before) = first_and_last(&older).unwrap();
    let logs = env.run(&["logs", "chatty", "-n", "5"]);
    assert_eq!(logs.code, Some(0), "{logs:?}");
    let numbers: Vec<u64> = logs.stdout.lines().filter_map(line_number).collect();
    assert_eq!(numbers.len(), 5, "{logs:?}");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "not consecutive: {numbers:?}"
    );
    assert!(
        numbers[0] > before,
        "`logs -n 5` showed {numbers:?}, older than line {before} of {}",
        older.display()
    );

    // A follower sees lines newer than any written before it started, across rotations.
    let (_, newest) = first_and_last(&live).unwrap_or((0, 0));
    let follow = Follow::spawn(env.command(&["logs", "chatty", "-f", "-n", "0"]));
    follow.until_line_beyond(newest + 200_000);
    drop(follow);

    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_state_empty();
}

/// A foreground `harness up` of a service that writes as fast as it can, its output followed on
/// our stdout pipe: the `harness up` process stays small while the service's lines flow through
/// it and its log, and SIGTERM still tears everything down.
#[test]
fn a_foreground_up_of_a_chatty_service_stays_small() {
    let env = Env::new();
    let file = chatty(&env);
    let mut command = env.command(&["up", file.to_str().unwrap()]);
    command.env("TMPDIR", env.state.path());
    let mut up = Follow::spawn(command);
    // Lines far beyond what 2 files of 1 MiB hold have been printed.
    up.until_line_beyond(300_000);
    let pid = up.child.id();
    let peak = peak_rss_kib(pid);
    assert!(peak < 150 << 10, "`harness up` peaked at {peak} KiB");

    assert_eq!(terminate(&mut up).code(), Some(0));
    env.assert_state_empty();
}
