//! The `harness` command line against hostile conditions: a stdout nobody reads (a closed pipe),
//! a topology "file" that never ends (`/dev/zero`) or never starts (a FIFO), a low limit of
//! open files, a supervisor killed while it starts, a topology file deleted while its run goes
//! on, a path with spaces, and statuses and binaries that must be described as they are.
//! Every test checks that nothing of its run is left.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/leftovers.rs"]
mod leftovers;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use leftovers::Leftovers;
use rustix::process::{Pid, Resource, Rlimit, Signal};

use fixtures::{project_dir, topology_file};

/// How long a run may take before the test gives up on it: generous, for a loaded 2-core CI
/// runner. Never a measurement.
const WAIT: Duration = Duration::from_secs(90);

/// The environment variable that marks the processes of one test's runs.
const MARKER: &str = "HARNESS_HOSTILE_TEST";

/// A project directory, a state root and a marker of the test's own. Dropping it kills what
/// the run left, so that a failed test leaves nothing behind either.
struct Env {
    project: tempfile::TempDir,
    state: tempfile::TempDir,
    marker: String,
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        let project = project_dir();
        let marker = project.path().display().to_string();
        Env {
            project,
            state: tempfile::Builder::new()
                .prefix("harness-state-")
                .tempdir()
                .unwrap(),
            marker,
        }
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers::new(MARKER, &self.marker).with_state_root(self.state.path())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
        command
            .args(args)
            .current_dir(self.project.path())
            .env("HARNESS_STATE_DIR", self.state.path())
            .env(MARKER, &self.marker)
            .env_remove("HARNESS_OVERLAY")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        finish(self.command(args))
    }

    /// Runs `harness ARGS` with stdout a pipe whose read end is already closed.
    fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut command = self.command(args);
        command.stdout(writer).stderr(Stdio::piped());
        let output = spawn_and_wait(command);
        Run {
            code: output.status.code(),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The pid of the one run's supervisor, from its record in the state root.
    fn supervisor(&self) -> Option<u32> {
        std::fs::read_dir(self.state.path())
            .ok()?
            .flatten()
            .find_map(|run| {
                let text = std::fs::read_to_string(run.path().join("run")).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("pid="))
                    .and_then(|p| p.parse().ok())
            })
    }

    /// Waits until `harness down` and everything it stops are gone.
    fn assert_nothing_left(&self) {
        self.leftovers()
            .assert_nothing_left(Duration::from_secs(30));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pid) = self.supervisor().and_then(|p| Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        self.leftovers().kill_processes();
    }
}

/// Runs `command` to its end (within [`WAIT`]), stdout and stderr captured unless set.
fn finish(mut command: Command) -> Run {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = spawn_and_wait(command);
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Spawns `command` and collects it, killing it if it has not ended within [`WAIT`].
fn spawn_and_wait(mut command: Command) -> Output {
    let child = command.spawn().expect("run harness");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => {
            let _ = waiter.join();
            output.expect("wait for harness")
        }
        Err(_) => {
            let _ = rustix::process::kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL);
            let output = rx.recv().expect("the killed harness").expect("wait");
            panic!(
                "harness did not end within {WAIT:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Limits the open files of what `command` runs: soft limit `soft`, hard limit `hard`.
fn with_open_files_limit(command: &mut Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            rustix::process::setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(soft),
                    maximum: Some(hard),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
}

fn assert_no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked") && run.code != Some(101),
        "harness panicked: {run:?}"
    );
}

/// The "Max open files" soft and hard limits of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let cells: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (cells[0].to_string(), cells[1].to_string())
}

/// A copy of `demo.yaml` at `path` (its binaries are relative to the project directory).
fn demo_at(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(topology_file("demo.yaml"), path).unwrap();
    path.to_path_buf()
}

#[test]
fn up_d_and_status_into_a_closed_pipe_do_their_job_without_panicking() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let up = env.run_into_closed_pipe(&["up", "-d", demo.to_str().unwrap()]);
    assert_no_panic(&up);
    assert_eq!(up.code, Some(0), "{up:?}");
    // The topology runs as if the output had been read: status sees every service running.
    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(0), "{status:?}");
    let running = status
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("running"))
        .count();
    assert_eq!(running, 4, "{status:?}");

    let status = env.run_into_closed_pipe(&["status"]);
    assert_no_panic(&status);
    assert_eq!(status.code, Some(0), "{status:?}");
    let logs = env.run_into_closed_pipe(&["logs", "web"]);
    assert_no_panic(&logs);
    assert_eq!(logs.code, Some(0), "{logs:?}");

    let down = env.run_into_closed_pipe(&["down"]);
    assert_no_panic(&down);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_nothing_left();
    // Nothing runs now, and saying so into a closed pipe does not change the exit code.
    let status = env.run_into_closed_pipe(&["status"]);
    assert_no_panic(&status);
    assert_eq!(status.code, Some(3), "{status:?}");
}

#[test]
fn a_failed_up_d_into_a_closed_pipe_exits_1_and_leaves_nothing() {
    let env = Env::new();
    let failing = topology_file("failing.yaml");
    let up = env.run_into_closed_pipe(&["up", "-d", failing.to_str().unwrap()]);
    assert_no_panic(&up);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr
            .contains("harness up: failed to start service broken ("),
        "{up:?}"
    );
    env.assert_nothing_left();
}

#[test]
fn up_of_dev_zero_fails_at_once_naming_it_with_bounded_memory() {
    let env = Env::new();
    for args in [&["up", "-d", "/dev/zero"][..], &["up", "/dev/zero"]] {
        let mut command = env.command(args);
        // 1 GiB of address space: plenty for harness, far from what reading /dev/zero takes.
        // SAFETY: setrlimit is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setrlimit(
                    Resource::As,
                    Rlimit {
                        current: Some(1 << 30),
                        maximum: Some(1 << 30),
                    },
                )
                .map_err(std::io::Error::from)
            });
        }
        let up = finish(command);
        assert_eq!(up.code, Some(125), "{up:?}");
        assert_eq!(
            up.stderr,
            "harness up: failed to read topology file /dev/zero: it is a character device, not \
             a regular file\n",
            "{up:?}"
        );
    }
    env.assert_nothing_left();
}

#[test]
fn an_overlay_from_the_environment_that_is_a_fifo_is_refused_naming_it() {
    let env = Env::new();
    let fifo = env.project.path().join("overlay.yaml");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let demo = topology_file("demo.yaml");
    let mut command = env.command(&["up", "-d", demo.to_str().unwrap()]);
    command.env("HARNESS_OVERLAY", &fifo);
    let up = finish(command);
    assert_eq!(up.code, Some(125), "{up:?}");
    assert_eq!(
        up.stderr,
        format!(
            "harness up: failed to read topology file {}: it is a FIFO, not a regular file\n",
            fifo.display()
        ),
        "{up:?}"
    );
    env.assert_nothing_left();
}

#[test]
fn the_supervisor_raises_its_soft_open_files_limit_to_the_hard_one() {
    let env = Env::new();
    let demo = topology_file("demo.yaml");
    let mut command = env.command(&["up", "-d", demo.to_str().unwrap()]);
    with_open_files_limit(&mut command, 256, 4096);
    let up = finish(command);
    assert_eq!(up.code, Some(0), "{up:?}");
    let supervisor = env.supervisor().expect("a supervisor");
    assert_eq!(
        open_files_limits(supervisor),
        ("4096".to_string(), "4096".to_string())
    );
    let down = env.run(&["down"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_nothing_left();
}

#[test]
fn running_out_of_open_files_says_which_limit_and_how_to_raise_it() {
    let env = Env::new();
    // More services than a hard limit of 48 open files can start.
    let mut topology = String::from("services:\n");
    for i in 0..60 {
        topology.push_str(&format!(
            "  echo-{i}:\n    target:\n      process:\n        binary: ./target/debug/echo-server\n    \
             port: auto\n    health_check:\n      tcp: {{}}\n"
        ));
    }
    let file = env.project.path().join("many.yaml");
    std::fs::write(&file, topology).unwrap();
    let mut command = env.command(&["up", file.to_str().unwrap()]);
    with_open_files_limit(&mut command, 48, 48);
    let up = finish(command);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr.contains("Too many open files (os error 24)")
            && up.stderr.contains(
                "harness reached its limit of 48 open files (RLIMIT_NOFILE, whose hard limit \
                 is 48): raise the hard limit (`ulimit -Hn`, LimitNOFILE= under systemd, or \
                 /etc/security/limits.conf) and run harness again"
            ),
        "{up:?}"
    );
    env.assert_nothing_left();
}

#[test]
fn a_binary_that_is_a_directory_is_reported_as_a_directory() {
    let env = Env::new();
    std::fs::create_dir(env.project.path().join("server")).unwrap();
    let file = env.project.path().join("dir.yaml");
    std::fs::write(
        &file,
        "services:\n  svc:\n    target:\n      process: { binary: ./server }\n",
    )
    .unwrap();
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr.contains("server is a directory, not a program"),
        "{up:?}"
    );
    assert!(!up.stderr.contains("does not exist"), "{up:?}");
    env.assert_nothing_left();
}

#[test]
fn exit_statuses_read_as_sentences() {
    let env = Env::new();
    let file = env.project.path().join("exits.yaml");
    std::fs::write(
        &file,
        "services:\n  three:\n    target:\n      process: { binary: /bin/sh, args: [-c, 'exit 3'] }\n    port: auto\n    health_check: { tcp: {} }\n",
    )
    .unwrap();
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr
            .contains("it exited with code 3 before it was healthy"),
        "{up:?}"
    );
    std::fs::write(
        &file,
        "services:\n  nine:\n    target:\n      process: { binary: /bin/sh, args: [-c, 'kill -s KILL 0'] }\n    port: auto\n    health_check: { tcp: {} }\n",
    )
    .unwrap();
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(1), "{up:?}");
    assert!(
        up.stderr
            .contains("it was killed by signal 9 (SIGKILL) before it was healthy"),
        "{up:?}"
    );
    let run = env.run(&["run", "-t", "/bin/sh", "-c", "kill -9 $$"]);
    assert_eq!(run.code, Some(128 + 9), "{run:?}");
    assert!(
        run.stderr
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("--- was killed by signal 9 (SIGKILL)")),
        "{run:?}"
    );
    env.assert_nothing_left();
}

#[test]
fn a_supervisor_killed_during_the_start_is_reported_with_its_log() {
    let env = Env::new();
    // A service that takes long to become healthy keeps the start going while we kill.
    let file = env.project.path().join("slow.yaml");
    std::fs::write(
        &file,
        "services:\n  slow:\n    target:\n      process:\n        binary: ./target/debug/http-health\n        \
         env: { READY_AFTER_MS: \"600000\" }\n    port: auto\n    health_check:\n      \
         http: { path: /health }\n      start_period: 10m\n",
    )
    .unwrap();
    let mut command = env.command(&["up", "-d", file.to_str().unwrap()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    let supervisor = loop {
        if let Some(pid) = env.supervisor() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no supervisor recorded");
        std::thread::sleep(Duration::from_millis(50));
    };
    rustix::process::kill_process(Pid::from_raw(supervisor as i32).unwrap(), Signal::KILL).unwrap();
    let output = child.wait_with_output().unwrap();
    let up = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(up.code, Some(1), "{up:?}");
    let said = format!(
        "harness up: failed to start {}: the supervisor (pid {supervisor}) was killed by \
         signal 9 (SIGKILL) before every service was healthy; its services died with it; its \
         log is ",
        file.display()
    );
    let log = up
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(&said))
        .unwrap_or_else(|| panic!("no line starting {said:?}: {up:?}"));
    let log = PathBuf::from(log.split(' ').next().unwrap());
    assert!(log.is_file(), "{} does not exist: {up:?}", log.display());
    // The next command clears the stale run, log included.
    let status = env.run(&["status"]);
    assert_eq!(status.code, Some(3), "{status:?}");
    env.assert_nothing_left();
}

#[test]
fn down_finds_a_run_whose_file_was_deleted() {
    let env = Env::new();
    let file = demo_at(&env.project.path().join("gone/demo.yaml"));
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(0), "{up:?}");
    std::fs::remove_file(&file).unwrap();
    let down = env.run(&["down", file.to_str().unwrap()]);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(
        down.stdout.starts_with("harness down: stopped "),
        "{down:?}"
    );
    env.assert_nothing_left();
    // And by a relative path from where it was, too.
    std::fs::create_dir_all(env.project.path().join("gone")).unwrap();
    let file = demo_at(&env.project.path().join("gone/demo.yaml"));
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(0), "{up:?}");
    std::fs::remove_dir_all(env.project.path().join("gone")).unwrap();
    let down = env.run(&["down", "gone/demo.yaml"]);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_nothing_left();
}

#[test]
fn the_down_hint_for_a_path_with_spaces_can_be_pasted_into_a_shell() {
    let env = Env::new();
    let file = demo_at(&env.project.path().join("my topologies/demo 1.yaml"));
    let canonical = file.canonicalize().unwrap();
    let up = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(up.code, Some(0), "{up:?}");
    let quoted = format!("'{}'", canonical.display());
    let hint = format!("stop with `harness down {quoted}`");
    assert!(up.stdout.contains(&hint), "{up:?}");
    let again = env.run(&["up", "-d", file.to_str().unwrap()]);
    assert_eq!(again.code, Some(4), "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("stop it with `harness down {quoted}`")),
        "{again:?}"
    );
    // The hint, run by a shell, stops the run.
    let pasted = format!("{} down {quoted}", env!("CARGO_BIN_EXE_harness"));
    let shell = env.command(&[]);
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", &pasted])
        .current_dir(env.project.path())
        .envs(shell.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null());
    let down = finish(command);
    assert_eq!(down.code, Some(0), "{down:?}");
    env.assert_nothing_left();
}
