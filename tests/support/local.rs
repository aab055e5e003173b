//! Helpers for tests that run real local processes: deadlines so a bug fails a test instead of
//! hanging it, and checks that a process is really gone.

use std::future::Future;
use std::time::{Duration, Instant};

use harness::exec::{EventStream, ProcessEvent};

/// How long any one test may take. Generous: the machine may be a loaded 2-core CI runner.
pub const TEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long we wait for one event, or for a process to disappear.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runs `fut` on smol, failing the test if it does not finish within [`TEST_DEADLINE`].
pub fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(within(TEST_DEADLINE, "the test", fut))
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    futures_lite::future::or(fut, async {
        smol::Timer::after(limit).await;
        panic!("{what} did not finish within {limit:?}");
    })
    .await
}

/// The next event, failing the test if none comes within [`WAIT`].
pub async fn next(events: &mut EventStream) -> Option<ProcessEvent> {
    within(WAIT, "waiting for the next event", events.recv()).await
}

/// The next event, which must exist.
pub async fn expect_event(events: &mut EventStream) -> ProcessEvent {
    next(events).await.expect("the event stream ended early")
}

/// Reads events until a line equal to `line` arrives, returning everything read before it.
pub async fn until_line(events: &mut EventStream, line: &str) -> Vec<ProcessEvent> {
    let mut seen = Vec::new();
    loop {
        match next(events).await {
            Some(e) if e.line() == Some(line) => return seen,
            Some(e) => seen.push(e),
            None => panic!("the stream ended before the line {line:?}; saw {seen:?}"),
        }
    }
}

/// Every remaining event, until the stream ends.
pub async fn rest(events: &mut EventStream) -> Vec<ProcessEvent> {
    let mut all = Vec::new();
    while let Some(e) = next(events).await {
        all.push(e);
    }
    all
}

/// Whether `pid` no longer runs: it does not exist, or it is a zombie some other process
/// (init, a subreaper) has yet to reap. A zombie of ours still counts as running: reaping our
/// children is our job.
pub fn is_gone(pid: u32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return true;
    };
    match rustix::process::test_kill_process(p) {
        Err(rustix::io::Errno::SRCH) => true,
        Err(e) => panic!("check process {pid}: {e}"),
        Ok(()) => match stat(pid) {
            None => true,
            Some((state, ppid)) => state == 'Z' && ppid != std::process::id(),
        },
    }
}

/// Waits (up to [`WAIT`]) for `pid` to be gone, failing the test otherwise.
pub fn assert_gone(pid: u32, what: &str) {
    let start = Instant::now();
    while !is_gone(pid) {
        if start.elapsed() > WAIT {
            panic!(
                "{what} (pid {pid}) is still running {WAIT:?} later: {:?}",
                stat(pid)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async form of [`assert_gone`], for use inside a test's future.
pub async fn gone(pid: u32, what: &str) {
    let start = Instant::now();
    while !is_gone(pid) {
        if start.elapsed() > WAIT {
            panic!(
                "{what} (pid {pid}) is still running {WAIT:?} later: {:?}",
                stat(pid)
            );
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` runs now and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// The state letter and parent pid of `pid`, from `/proc/PID/stat`.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parentheses.
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Live (non-zombie) processes with an argument that contains `needle`.
pub fn processes_with_arg(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let hit = cmdline
            .split(|&b| b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle));
        if hit && is_alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// A string no other test run uses, for file names and marker arguments.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "harness-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kills a process by pid when dropped, so a failing test does not leave it running.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32)
            && is_alive(self.0)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Runs the ignored test `test` of this very test binary in a child process, with `role_var`
/// set to `harness`, and its stdout piped: a stand-in harness that a test can kill.
pub fn spawn_stand_in(test: &str, role_var: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(role_var, "harness")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}
