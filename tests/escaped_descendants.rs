//! Descendants that leave their service's process group (fixtures/topologies/escaping.yaml:
//! a service that daemonizes twice) are gone after every end of a run, with a cgroup per
//! service in cgroup v2 (`HARNESS_CGROUP=v2`) and in the v1 freezer hierarchy (`v1`), and,
//! where cgroups are not available (`none` here), with the subreaper alone:
//!
//! - `harness down` after `harness up -d`;
//! - SIGTERM, SIGINT, SIGHUP and SIGQUIT of a foreground `harness up`;
//! - a test suite (tests/user_escaping.rs) whose tests pass, whose test panics, or that is
//!   ended with SIGTERM, SIGHUP or SIGQUIT, and the same suite under `cargo nextest run`, where a shared
//!   supervisor owns the copy.
//!
//! SIGKILL gives the killed process no chance: its services die by their death signal, and what
//! escaped them lives on in their cgroup, which the next harness command removes (`harness
//! status` for a detached supervisor, the next start for anything else). Without cgroups
//! nothing can find them after SIGKILL; those cases are tested with cgroups only.
//!
//! Every escaped process runs a link to `sleep` whose name carries a marker of the test's own,
//! and a guard kills whatever carries it when the test ends, so a failing test leaks nothing.

#[path = "support/fixtures.rs"]
mod fixtures;
#[expect(dead_code, reason = "this suite uses the process helpers only")]
#[path = "support/local.rs"]
mod local;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How long the escaped processes may take to start, or a run to end.
const WAIT: Duration = Duration::from_secs(60);

/// One scene: two marker programs (links to sleep), a state root and the harness processes
/// started, whose cgroups the guard removes if the test fails.
struct Scene {
    dir: tempfile::TempDir,
    marker: String,
    owners: Vec<u32>,
    /// Harness processes the test started and may leave running if it fails.
    children: Vec<Child>,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("harness-escape-")
            .tempdir()
            .unwrap();
        let marker = local::unique(tag);
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep");
        for side in ["a", "b"] {
            std::os::unix::fs::symlink(sleep, dir.path().join(format!("{marker}-{side}"))).unwrap();
        }
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Scene {
            dir,
            marker,
            owners: Vec::new(),
            children: Vec::new(),
        }
    }

    fn program(&self, side: &str) -> PathBuf {
        self.dir.path().join(format!("{}-{side}", self.marker))
    }

    /// `program` with the scene's environment, and `HARNESS_CGROUP` set to `cgroups` unless
    /// that is empty.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>, cgroups: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("HARNESS_ESCAPE_A", self.program("a"))
            .env("HARNESS_ESCAPE_B", self.program("b"))
            .env("HARNESS_STATE_DIR", self.dir.path().join("state"))
            .env("HARNESS_ESCAPING_SUITE", "1")
            .env("HARNESS_BASE_DIR", fixtures::workspace_dir())
            .env_remove("HARNESS_OVERLAY")
            .env_remove("NEXTEST_RUN_ID")
            .env_remove("NEXTEST_TEST_NAME")
            .current_dir(fixtures::workspace_dir())
            .stdin(Stdio::null());
        if cgroups.is_empty() {
            command.env_remove("HARNESS_CGROUP");
        } else {
            command.env("HARNESS_CGROUP", cgroups);
        }
        command
    }

    fn harness(&self, args: &[&str], cgroups: &str) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_harness"), cgroups);
        command.args(args);
        command
    }

    /// Runs `harness ARGS` to its end, which must be a success; returns its stdout.
    fn run(&mut self, args: &[&str], cgroups: &str) -> String {
        let out = self.harness(args, cgroups).output().unwrap();
        assert!(
            out.status.success(),
            "harness {args:?}: {}",
            fixtures::both(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `command` with no output, as a harness process of the scene (killed when the
    /// scene is dropped, if it still runs); returns its pid.
    fn start(&mut self, mut command: Command) -> u32 {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.owners.push(pid);
        self.children.push(child);
        pid
    }

    /// Waits until the process `pid` that [`Scene::start`] started has exited.
    fn wait_exit(&mut self, pid: u32, what: &str) -> std::process::ExitStatus {
        let child = self.children.iter_mut().find(|c| c.id() == pid).unwrap();
        wait_exit(child, what)
    }

    /// The escaped processes that run now.
    fn escaped(&self) -> Vec<u32> {
        local::processes_with_arg(&self.marker)
    }

    /// Waits until both escaped processes run.
    fn wait_escaped(&self) {
        let deadline = Instant::now() + WAIT;
        let runs = |side| !local::processes_with_arg(&format!("{}-{side}", self.marker)).is_empty();
        while !(runs("a") && runs("b")) {
            assert!(
                Instant::now() < deadline,
                "the service's escaped processes never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails unless no escaped process runs, now that `what` happened.
    fn assert_none_left(&self, what: &str) {
        let left = self.escaped();
        assert!(
            left.is_empty(),
            "after {what}, escaped processes still run: {left:?}"
        );
        for owner in &self.owners {
            assert_eq!(
                own_cgroups(*owner),
                Vec::<PathBuf>::new(),
                "after {what}, cgroups are left"
            );
        }
    }

    /// Waits up to `limit` until no escaped process runs.
    fn wait_none_left(&self, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.escaped().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.assert_none_left(what);
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in self.escaped() {
            let _ = local::KillOnDrop(pid);
        }
        for owner in &self.owners {
            for cgroup in own_cgroups(*owner) {
                remove_cgroup(&cgroup);
            }
        }
    }
}

/// Kills everything in the cgroup `path` (and below) and removes it, for a test that failed.
fn remove_cgroup(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let mut dirs = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        dirs.push(dir);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in dirs.iter().rev() {
        while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The values of `HARNESS_CGROUP` each test runs with where it can (v2 and v1 fall back to no
/// cgroup where they are not available).
const MODES: [&str; 3] = ["v2", "v1", "none"];

/// The directory this process is in, in the cgroup v2 hierarchy (`v2`) or the v1 freezer one,
/// where it is mounted (assuming a mount of its root, as on a host rather than in a container).
fn cgroup_dir_of(v2: bool) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (fields, fs) = l.split_once(" - ")?;
        let found = match v2 {
            true => fs.starts_with("cgroup2 "),
            false => fs.starts_with("cgroup ") && fs.split([' ', ',']).any(|o| o == "freezer"),
        };
        found.then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let place = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let found = match v2 {
            true => id == "0",
            false => controllers.split(',').any(|c| c == "freezer"),
        };
        found.then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(mount.join(place))
}

/// Both directories of [`cgroup_dir_of`] that exist.
fn cgroup_dirs() -> Vec<PathBuf> {
    [true, false]
        .into_iter()
        .filter_map(cgroup_dir_of)
        .collect()
}

/// The cgroups harness process `owner` made beside ours (`harness-<pid>-<start time>`).
fn own_cgroups(owner: u32) -> Vec<PathBuf> {
    let prefix = format!("harness-{owner}-");
    cgroup_dirs()
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// The modes of [`MODES`] with cgroups that can be made here. Says which cannot; that is a
/// failure where `HARNESS_REQUIRE_CGROUP=1` (it is where CI must test them).
fn cgroup_modes(test: &str) -> Vec<&'static str> {
    let mut modes = Vec::new();
    for (mode, v2) in [("v2", true), ("v1", false)] {
        let probe =
            cgroup_dir_of(v2).map(|d| d.join(format!("harness-probe-{}", std::process::id())));
        let available = probe
            .as_ref()
            .is_some_and(|p| std::fs::create_dir(p).is_ok() && std::fs::remove_dir(p).is_ok());
        if available {
            modes.push(mode);
        } else {
            eprintln!("{test}: HARNESS_CGROUP={mode} skipped, its cgroups cannot be made here");
        }
    }
    assert!(
        !modes.is_empty() || std::env::var_os("HARNESS_REQUIRE_CGROUP").is_none_or(|v| v != "1"),
        "{test}: no cgroup can be made here"
    );
    modes
}

fn signal(pid: u32, signal: Signal) {
    rustix::process::kill_process(Pid::from_raw(pid as i32).unwrap(), signal).unwrap();
}

/// Waits until `child` has exited.
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not end within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor's pid, from `up -d`'s output.
fn supervisor_pid(up: &str) -> u32 {
    up.split("(supervisor pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no supervisor pid in {up}"))
}

fn topology() -> String {
    fixtures::topology_file("escaping.yaml")
        .display()
        .to_string()
}

#[test]
fn down_after_up_d_removes_them() {
    for cgroups in MODES {
        let mut scene = Scene::new("down");
        let up = scene.run(&["up", "-d", &topology(), "--stop-grace", "2s"], cgroups);
        scene.owners.push(supervisor_pid(&up));
        scene.wait_escaped();
        scene.run(&["down"], cgroups);
        scene.assert_none_left(&format!("`harness down` (HARNESS_CGROUP={cgroups})"));
    }
}

#[test]
fn a_signal_to_a_foreground_up_removes_them() {
    for cgroups in MODES {
        for sig in [Signal::TERM, Signal::INT, Signal::HUP, Signal::QUIT] {
            let mut scene = Scene::new("up");
            let up =
                scene.start(scene.harness(&["up", &topology(), "--stop-grace", "2s"], cgroups));
            scene.wait_escaped();
            signal(up, sig);
            let what = format!("{sig:?} of `harness up` (HARNESS_CGROUP={cgroups})");
            let status = scene.wait_exit(up, &what);
            assert!(status.success(), "{what}: {status}");
            scene.assert_none_left(&what);
        }
    }
}

#[test]
fn a_killed_supervisor_leaves_them_to_the_next_status() {
    for mode in cgroup_modes("a_killed_supervisor_leaves_them_to_the_next_status") {
        killed_supervisor(mode);
    }
}

/// SIGKILL of a detached supervisor with `HARNESS_CGROUP=mode`, then `harness status`.
fn killed_supervisor(mode: &str) {
    let mut scene = Scene::new("supervisor-kill");
    let up = scene.run(&["up", "-d", &topology()], mode);
    let supervisor = supervisor_pid(&up);
    scene.owners.push(supervisor);
    scene.wait_escaped();
    signal(supervisor, Signal::KILL);
    let deadline = Instant::now() + WAIT;
    while local::is_alive(supervisor) {
        assert!(
            Instant::now() < deadline,
            "the killed supervisor still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its death signal took the service, but not what escaped it, which `status` removes
    // (unless another test's harness, started in the same cgroup meanwhile, swept them first).
    let status = scene.harness(&["status"], mode).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("removed the stale run"),
        "{}",
        fixtures::both(&status)
    );
    scene.assert_none_left(&format!(
        "SIGKILL of the supervisor, then `harness status` (HARNESS_CGROUP={mode})"
    ));
}

#[test]
fn a_killed_foreground_up_leaves_them_to_the_next_start() {
    for mode in cgroup_modes("a_killed_foreground_up_leaves_them_to_the_next_start") {
        killed_foreground_up(mode);
    }
}

/// SIGKILL of a foreground `harness up` with `HARNESS_CGROUP=mode`, then the next start.
fn killed_foreground_up(mode: &str) {
    let mut scene = Scene::new("up-kill");
    let killed = scene.start(scene.harness(&["up", &topology()], mode));
    scene.wait_escaped();
    signal(killed, Signal::KILL);
    scene.wait_exit(killed, "the killed `harness up`");
    // Its death signal took the service, but not what escaped it. (Unless another test's
    // harness, started in the same cgroup meanwhile, removed them already: every start sweeps.)
    let left = scene.escaped();

    let next = scene.start(scene.harness(&["up", &topology()], mode));
    let deadline = Instant::now() + WAIT;
    while left.iter().any(|&pid| local::is_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "the next start left {left:?} running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Removed once they are gone, an instant after this sees them gone.
    while !own_cgroups(killed).is_empty() {
        assert!(Instant::now() < deadline, "the killed run's cgroup is left");
        std::thread::sleep(Duration::from_millis(20));
    }
    scene.wait_escaped();
    signal(next, Signal::TERM);
    scene.wait_exit(next, "the next `harness up`");
    scene.assert_none_left(&format!(
        "SIGKILL of `harness up`, then the next start and its SIGTERM (HARNESS_CGROUP={mode})"
    ));
}

#[test]
fn a_test_suite_removes_them_however_its_tests_end() {
    let suite = fixtures::test_binary("user_escaping");
    for cgroups in MODES {
        for end in ["pass", "panic"] {
            let scene = Scene::new("suite");
            let out = scene
                .command(&suite, cgroups)
                .args(["--test-threads", "2"])
                .env("HARNESS_ESCAPING_END", end)
                .output()
                .unwrap();
            let what = format!("a suite whose tests {end} (HARNESS_CGROUP={cgroups})");
            let text = fixtures::both(&out);
            assert_eq!(out.status.success(), end == "pass", "{what}:\n{text}");
            assert!(
                text.contains(if end == "pass" {
                    "2 passed"
                } else {
                    "2 failed"
                }),
                "{what}:\n{text}"
            );
            scene.assert_none_left(&what);
        }
        // Ended from outside while its tests run (nextest's timeout, `kill`, a closed
        // terminal, SIGQUIT).
        for sig in [Signal::TERM, Signal::HUP, Signal::QUIT] {
            let mut scene = Scene::new("suite-term");
            let mut command = scene.command(&suite, cgroups);
            command
                .args(["--test-threads", "2"])
                .env("HARNESS_ESCAPING_END", "hang");
            let suite_pid = scene.start(command);
            scene.wait_escaped();
            signal(suite_pid, sig);
            let what = format!("{sig:?} of the suite (HARNESS_CGROUP={cgroups})");
            let status = scene.wait_exit(suite_pid, &what);
            // It ends as the signal would have ended it; SIGQUIT without a core, 128 + 3.
            let expected = match sig {
                Signal::QUIT => status.code() == Some(131),
                _ => std::os::unix::process::ExitStatusExt::signal(&status) == Some(sig.as_raw()),
            };
            assert!(expected, "{what}: {status}");
            scene.assert_none_left(&what);
        }
    }
}

#[test]
fn a_shared_supervisor_under_nextest_removes_them() {
    for cgroups in MODES {
        let scene = Scene::new("nextest");
        let out = scene
            .command(fixtures::cargo(), cgroups)
            .args(["nextest", "run", "--workspace", "--test", "user_escaping"])
            .args(["--no-fail-fast", "--target-dir"])
            .arg(fixtures::target_dir())
            .env("HARNESS_SUPERVISOR_IDLE", "2")
            .output()
            .unwrap();
        let text = fixtures::both(&out);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("LEAK"), "nextest saw a leak:\n{text}");
        // The supervisor tears down once the run is over, within its poll.
        scene.wait_none_left(
            &format!("a nextest run (HARNESS_CGROUP={cgroups})"),
            Duration::from_secs(20),
        );
    }
}

#[test]
fn orphans_that_exit_during_a_run_are_reaped_as_they_do() {
    // Every 20 ms the service leaves an orphan that exits at once: each is a zombie of
    // `harness up`, its subreaper, until it reaps it.
    let mut scene = Scene::new("zombies");
    let file = scene.dir.path().join("zombies.yaml");
    std::fs::write(
        &file,
        "services:\n  leaver:\n    target:\n      process:\n        binary: sh\n        args: \
         [\"-c\", \"while :; do (sh -c 'exit 0' &); sleep 0.02; done\"]\n",
    )
    .unwrap();
    let up = scene.start(scene.harness(&["up", file.to_str().unwrap()], "none"));
    std::thread::sleep(Duration::from_secs(2));
    let zombies = zombie_children(up);
    signal(up, Signal::TERM);
    let status = scene.wait_exit(up, "`harness up`");
    assert!(status.success(), "{status}");
    // Some may have exited in the instant before we looked.
    assert!(
        zombies.len() < 10,
        "zombies of `harness up` pile up: {zombies:?}"
    );
}

/// The children of `parent` that are zombies.
fn zombie_children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| local::stat(pid) == Some(('Z', parent)))
        .collect()
}
