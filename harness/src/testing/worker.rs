//! Output capture under `cargo test`: tests run in worker processes, children of the runner,
//! whose stdout and stderr go to one pipe that the runner reads, so what a test prints is shown
//! with its failure, or with `--show-output`, and never between the runner's own lines.
//!
//! - The runner starts a worker when a test thread has none idle, so there are at most as many
//!   as `--test-threads`. A worker is the test binary itself, run with no arguments and
//!   `HARNESS_WORKER=<runner pid>:<directory>`; a program that a test runs inherits the
//!   variable, but its parent is no runner, so it is no worker. It reads a random token from its stdin, then test
//!   names, one per line. It runs each on a thread named after the test (libtest does too, so a
//!   panic names the test), flushes its output and writes the token and the outcome, one line
//!   of JSON, to its stdout. What the pipe carried before the token is the test's output.
//! - The shared copies stay the runner's: it starts one when the first worker asks and stops it
//!   after its last selected test, as it does without capture. It serves each on a socket in
//!   the directory, `<fingerprint>.sock`, with the supervisor's protocol (`supervisor.rs`), so
//!   a test in a worker stops, starts and restarts services of the shared copy as under
//!   nextest. A worker keeps its lease from test to test and, before each, asks how the copy
//!   is now (another test may have restarted a service). An `isolated` test's private copy
//!   is its worker's.
//! - The workers started ahead of the tests, while the first topology starts, are the ones
//!   the first tests get; a test starts a worker of its own only when none is idle or on its
//!   way. At the end of the run they are all closed at once.
//! - A test still running a second after its timeout (a body that blocks its thread without
//!   awaiting) has its worker ended: SIGTERM, which stops the worker's private copies, then
//!   SIGKILL after five seconds. A worker that ends during a test (killed, `process::exit`, an
//!   abort) fails that test with its exit status and output; the next test gets a new worker.
//! - A worker dies with the runner (`PR_SET_PDEATHSIG`, SIGTERM) and ends when its stdin closes.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::__private::TESTS;
use super::case::{Runtime, TestCase};
use super::shared::{Origin, Shared};
use super::supervisor::{self, Welcome};

/// `<runner pid>:<directory>` in a worker process.
const WORKER_ENV: &str = "HARNESS_WORKER";
/// How long a test may run past its timeout before its worker is ended.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);
/// How long an ended worker has to stop its private copies after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting runner checks that its worker still lives.
const TICK: Duration = Duration::from_millis(100);
/// The most output kept of one test; beyond it the oldest bytes are dropped.
const MAX_OUTPUT: usize = 16 << 20;

/// Whether tests run in workers: unless `--nocapture` or `RUST_TEST_NOCAPTURE` (set to
/// anything but `0`, as libtest reads it) asks for their output as it comes.
pub(crate) fn capture(args: &libtest_mimic::Arguments) -> bool {
    let nocapture_env = std::env::var_os("RUST_TEST_NOCAPTURE").is_some_and(|v| v != "0");
    !args.nocapture && !nocapture_env && !args.list
}

/// How a test ended in its worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Passed,
    Failed(String),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The runner's side: the workers, and the sockets its shared copies are served on.
pub(crate) struct Workers {
    dir: crate::orchestrator::RunDir,
    token: String,
    exe: PathBuf,
    pool: Mutex<Pool>,
    /// Signalled when a worker being started ahead of the tests is ready, or failed to start.
    ready: Condvar,
    /// The thread that starts workers. A worker's death signal comes when the thread that
    /// started it ends, and the test threads end as they run out of tests: this one lives as
    /// long as the workers do.
    spawner: Mutex<Sender<SpawnRequest>>,
    /// The threads starting workers ahead of the tests, joined before the workers end.
    prewarming: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// What passing tests printed, by name, kept for `--show-output`.
    shown: Option<Mutex<Vec<(String, String)>>>,
}

impl Workers {
    /// Serves each of `shareds` on a socket of its own; workers start when tests need them.
    pub(crate) fn new<'a>(
        shareds: impl IntoIterator<Item = &'a Arc<Shared>>,
        show_output: bool,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("find the test binary: {e}"))?;
        let dir = crate::orchestrator::create_run_dir()
            .map_err(|e| format!("create a directory for the test workers: {e}"))?;
        for shared in shareds {
            let socket = dir.path().join(shared.socket_name());
            let listener = UnixListener::bind(&socket)
                .map_err(|e| format!("listen on {}: {e}", socket.display()))?;
            serve(listener, shared.clone());
        }
        let (spawner, requests) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("harness-workers".into())
            .spawn(move || {
                for (mut command, reply) in requests {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|e| format!("start the thread that starts test workers: {e}"))?;
        Ok(Self {
            dir,
            token: token(),
            exe,
            pool: Mutex::new(Pool::default()),
            ready: Condvar::new(),
            spawner: Mutex::new(spawner),
            prewarming: Mutex::new(Vec::new()),
            shown: show_output.then(|| Mutex::new(Vec::new())),
        })
    }

    /// Starts `count` workers and `first`, the shared copy the first test needs, at the same
    /// time, each on a thread of its own, before the tests ask for them.
    pub(crate) fn prewarm(self: &Arc<Self>, count: usize, first: Option<Arc<Shared>>) {
        let mut threads = lock(&self.prewarming);
        if let Some(shared) = first {
            threads.push(std::thread::spawn(move || {
                // A failed start is kept, and reported by the tests that need the copy.
                let _ = shared.acquire();
            }));
        }
        lock(&self.pool).starting += count;
        for _ in 0..count {
            let workers = self.clone();
            threads.push(std::thread::spawn(move || {
                let spawned = workers.spawn();
                let mut pool = lock(&workers.pool);
                pool.starting -= 1;
                if let Ok(worker) = spawned {
                    pool.idle.push(worker);
                }
                workers.ready.notify_all();
            }));
        }
    }

    /// An idle worker, one being started ahead of the tests once it is ready, or a new one.
    fn take(&self) -> Result<Worker, String> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(worker) = pool.idle.pop() {
                return Ok(worker);
            }
            if pool.starting == 0 {
                break;
            }
            pool = self.ready.wait(pool).unwrap_or_else(|e| e.into_inner());
        }
        drop(pool);
        self.spawn()
    }

    /// Runs `case` in an idle worker, or a new one; `Err` with its output and why it failed.
    pub(crate) fn run(&self, case: &TestCase) -> Result<(), String> {
        let mut worker = self.take()?;
        let name = case.test_name();
        match worker.run(&name, case.timeout()) {
            Ran::Done(output, outcome) => {
                lock(&self.pool).idle.push(worker);
                self.ready.notify_one();
                match outcome {
                    Outcome::Passed => {
                        if let Some(shown) = &self.shown
                            && !output.is_empty()
                        {
                            lock(shown).push((name, output));
                        }
                        Ok(())
                    }
                    Outcome::Failed(message) => Err(with_output(&output, &message)),
                }
            }
            Ran::Ended(output, why) => Err(with_output(&output, &why)),
        }
    }

    fn spawn(&self) -> Result<Worker, String> {
        let (reader, writer) =
            std::io::pipe().map_err(|e| format!("create a pipe for a test worker: {e}"))?;
        let child = {
            let stderr = writer
                .try_clone()
                .map_err(|e| format!("create a pipe for a test worker: {e}"))?;
            // The spawner thread drops it once the worker runs, so the pipe's write ends are
            // the worker's only.
            let mut command = Command::new(&self.exe);
            let role = format!("{}:{}", std::process::id(), self.dir.path().display());
            command
                .env(WORKER_ENV, role)
                .stdin(Stdio::piped())
                .stdout(writer)
                .stderr(stderr);
            let (reply, spawned) = mpsc::channel();
            let sent = lock(&self.spawner).send((command, reply));
            sent.ok()
                .and_then(|()| spawned.recv().ok())
                .unwrap_or_else(|| Err(std::io::Error::other("the spawner thread is gone")))
                .map_err(|e| format!("start a test worker {}: {e}", self.exe.display()))?
        };
        // A signal that ends the runner ends the worker first, and waits while it stops its
        // private copies.
        crate::orchestrator::end_helper_first(child.id());
        let mut worker = Worker::new(child, reader, self.token.clone())?;
        if let Err(e) = writeln!(worker.stdin, "{}", self.token) {
            worker.end();
            return Err(format!("start a test worker: {e}"));
        }
        Ok(worker)
    }

    /// Ends the idle workers (their stdin closes) and prints what passing tests printed, for
    /// `--show-output`, as libtest's `successes:` section.
    pub(crate) fn finish(&self, json: bool) {
        let prewarming: Vec<_> = lock(&self.prewarming).drain(..).collect();
        for thread in prewarming {
            let _ = thread.join();
        }
        let idle: Vec<Worker> = lock(&self.pool).idle.drain(..).collect();
        // All at once: each stops what it started and ends on its own.
        let closing: Vec<Closing> = idle.into_iter().map(Worker::close).collect();
        for worker in closing {
            worker.wait();
        }
        let Some(shown) = &self.shown else { return };
        let shown = lock(shown);
        if shown.is_empty() || json {
            return;
        }
        let mut out = String::from("\nsuccesses:\n");
        for (name, output) in shown.iter() {
            out.push_str(&format!("\n---- {name} stdout ----\n{output}"));
            if !output.ends_with('\n') {
                out.push('\n');
            }
        }
        out.push_str("\nsuccesses:\n");
        for (name, _) in shown.iter() {
            out.push_str(&format!("    {name}\n"));
        }
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
}

/// The workers no test uses now, and how many are being started ahead of the tests.
#[derive(Default)]
struct Pool {
    idle: Vec<Worker>,
    starting: usize,
}

/// A worker whose stdin is closed, ending.
struct Closing(Child);

impl Closing {
    /// Waits for it to end, for [`TERM_GRACE`] at most, then kills it.
    fn wait(mut self) {
        let deadline = Instant::now() + TERM_GRACE;
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        crate::orchestrator::forget_helper(self.0.id());
    }
}

/// A worker to start, and where its process goes.
type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// What a worker printed, then `message`.
fn with_output(output: &str, message: &str) -> String {
    match output.trim_start_matches('\n').trim_end() {
        "" => message.to_string(),
        printed => format!("{printed}\n\n{message}"),
    }
}

/// A random token no test prints by chance.
fn token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (now.as_nanos() ^ u128::from(std::process::id()) << 64).to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\u{1e}harness-worker-{hex}\u{1e}")
}

/// Serves `shared`'s copy to the workers that connect to `listener`, started when the first
/// one does.
fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let one_at_a_time = Arc::new(Mutex::new(()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let shared = shared.clone();
            let one_at_a_time = one_at_a_time.clone();
            std::thread::spawn(move || {
                let started = shared.acquire();
                let welcome = match &started {
                    Ok(topology) => Welcome::Ok(topology.describe()),
                    Err(message) => Welcome::Err(message.clone()),
                };
                if stream
                    .write_all(supervisor::welcome_line(&welcome).as_bytes())
                    .is_ok()
                {
                    supervisor::answer_requests(
                        &mut stream,
                        started.as_ref().ok(),
                        &one_at_a_time,
                        |note| tracing::debug!("{note}"),
                    );
                }
            });
        }
    });
}

/// What came of a test sent to a worker.
enum Ran {
    /// It finished: its output and outcome.
    Done(String, Outcome),
    /// The worker ended, or was ended, before it finished: its output and why.
    Ended(String, String),
}

/// What a worker printed since its last test finished.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    /// Bytes dropped from the front because the output was longer than [`MAX_OUTPUT`].
    dropped: usize,
    /// Where the search for the token goes on.
    scanned: usize,
}

impl Capture {
    /// What was captured, as text, with a note of what was dropped.
    fn take(&mut self, end: usize) -> String {
        let mut text = String::new();
        if self.dropped > 0 {
            text.push_str(&format!(
                "[harness: the first {} bytes of the output are left out]\n",
                self.dropped
            ));
        }
        text.push_str(&String::from_utf8_lossy(&self.bytes[..end]));
        self.dropped = 0;
        text
    }
}

/// One worker process, as the runner sees it.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    done: Receiver<(String, Outcome)>,
    capture: Arc<Mutex<Capture>>,
}

impl Worker {
    fn new(mut child: Child, output: std::io::PipeReader, token: String) -> Result<Self, String> {
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("start a test worker: it has no stdin".to_string());
        };
        let capture = Arc::new(Mutex::new(Capture::default()));
        let (sender, done) = mpsc::channel();
        let reading = capture.clone();
        std::thread::spawn(move || read_output(output, token.as_bytes(), &reading, &sender));
        Ok(Self {
            child,
            stdin,
            done,
            capture,
        })
    }

    fn run(&mut self, name: &str, timeout: Option<Duration>) -> Ran {
        if let Err(e) = writeln!(self.stdin, "{name}") {
            return self.ended(format!("its test process could not be given the test: {e}"));
        }
        let deadline = timeout.map(|t| (t, Instant::now() + t + TIMEOUT_GRACE));
        loop {
            match self.done.recv_timeout(TICK) {
                Ok((output, outcome)) => return Ran::Done(output, outcome),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // It closed its output: mostly, it ended.
                    let deadline = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < deadline {
                        if let Ok(Some(status)) = self.child.try_wait() {
                            return self.ended(format!(
                                "its test process ended ({status}) before the test finished"
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    return self.ended("its test process closed its output".to_string());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it wrote last may still be in the pipe.
                std::thread::sleep(Duration::from_millis(20));
                if let Ok((output, outcome)) = self.done.try_recv() {
                    return Ran::Done(output, outcome);
                }
                return self.ended(format!(
                    "its test process ended ({status}) before the test finished"
                ));
            }
            if let Some((limit, at)) = deadline
                && Instant::now() >= at
            {
                return self.ended(format!(
                    "the test did not finish within its timeout of {}; its body blocked its \
                     thread, so its test process was ended",
                    crate::topology::format_duration(limit)
                ));
            }
        }
    }

    /// Ends the worker and gives its output with `why`.
    fn ended(&mut self, why: String) -> Ran {
        self.terminate();
        // The state directories of its private copies, which it could not remove.
        crate::orchestrator::sweep_run_dirs();
        let mut capture = lock(&self.capture);
        let end = capture.bytes.len();
        Ran::Ended(capture.take(end), why)
    }

    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaped either way.
    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = i32::try_from(self.child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + TERM_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::orchestrator::forget_helper(self.child.id());
        // What it wrote last.
        std::thread::sleep(Duration::from_millis(20));
    }

    fn end(mut self) {
        self.terminate();
    }

    /// Closes its stdin, which ends it; [`Closing::wait`] waits for it.
    fn close(self) -> Closing {
        drop(self.stdin);
        Closing(self.child)
    }
}

/// Reads a worker's output into `capture`; each token line ends a test's output and is sent
/// with its outcome.
fn read_output(
    mut pipe: std::io::PipeReader,
    token: &[u8],
    capture: &Mutex<Capture>,
    done: &Sender<(String, Outcome)>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut capture = lock(capture);
        capture.bytes.extend_from_slice(&chunk[..n]);
        loop {
            let Some(at) = find(&capture.bytes[capture.scanned..], token) else {
                // A token may begin in the last bytes, and end in the next read.
                capture.scanned = capture.bytes.len().saturating_sub(token.len() - 1);
                break;
            };
            let at = capture.scanned + at;
            let line = at + token.len();
            let Some(newline) = capture.bytes[line..].iter().position(|&b| b == b'\n') else {
                // The rest of the line is still to come.
                capture.scanned = at;
                break;
            };
            let outcome = serde_json::from_slice(&capture.bytes[line..line + newline])
                .unwrap_or_else(|e| {
                    Outcome::Failed(format!("its worker said something else: {e}"))
                });
            let output = capture.take(at);
            capture.bytes.drain(..line + newline + 1);
            capture.scanned = 0;
            if done.send((output, outcome)).is_err() {
                return;
            }
        }
        if capture.bytes.len() > MAX_OUTPUT {
            let cut = capture.bytes.len() - MAX_OUTPUT / 2;
            capture.bytes.drain(..cut);
            capture.dropped += cut;
            capture.scanned = capture.scanned.saturating_sub(cut);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The runner's pid, if this process is one of its workers.
pub(crate) fn runner_pid() -> Option<u32> {
    let value = std::env::var(WORKER_ENV).ok()?;
    let (runner, _) = value.split_once(':')?;
    let parent = rustix::process::getppid()?.as_raw_nonzero().get();
    let runner = runner.parse::<i32>().ok()?;
    (runner == parent).then_some(runner as u32)
}

/// If this process is a worker, runs the tests its runner sends until its stdin closes.
///
/// A process is a worker when [`WORKER_ENV`] names its parent: a program a test runs inherits
/// the variable, but its parent is the worker, so it is no worker itself.
pub(crate) fn run_if_worker(runtime: Runtime) -> Option<ExitCode> {
    runner_pid()?;
    let value = std::env::var(WORKER_ENV).ok()?;
    let (_, dir) = value.split_once(':')?;
    Some(work(PathBuf::from(dir), runtime))
}

fn work(dir: PathBuf, runtime: Runtime) -> ExitCode {
    let runner = rustix::process::getppid();
    // Dies with the runner: SIGTERM, so that its private copies are stopped.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    if rustix::process::getppid() != runner {
        // The runner ended before the death signal was set.
        return ExitCode::FAILURE;
    }
    if let Err(e) = crate::exec::become_subreaper() {
        tracing::debug!("failed to become a child subreaper: {e}");
    }
    crate::orchestrator::remove_on_termination();
    let base_dir = super::runner::base_dir();
    let mut shareds: BTreeMap<String, Arc<Shared>> = BTreeMap::new();
    let mut lines = std::io::stdin().lock().lines();
    let Some(Ok(token)) = lines.next() else {
        return ExitCode::FAILURE;
    };
    for name in lines {
        let Ok(name) = name else { break };
        let outcome = match TESTS.iter().find(|case| case.test_name() == name) {
            None => Outcome::Failed(format!("this test binary has no test named {name}")),
            Some(case) => {
                let shared = Shared::new(case, base_dir.clone(), Origin::Here);
                let socket = dir.join(shared.socket_name());
                let shared = shareds
                    .entry(socket.display().to_string())
                    .or_insert_with(|| Arc::new(shared.with_origin(Origin::Runner(socket))))
                    .clone();
                run_named(case, shared, &name, runtime)
            }
        };
        if !report(&token, &outcome) {
            break;
        }
    }
    crate::exec::remove_descendants();
    ExitCode::SUCCESS
}

/// Runs `case` on a thread named `name`, as libtest does.
fn run_named(
    case: &'static TestCase,
    shared: Arc<Shared>,
    name: &str,
    runtime: Runtime,
) -> Outcome {
    let ran = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || super::runner::run_test(case, &shared, runtime));
    match ran.map(|thread| thread.join()) {
        Ok(Ok(Ok(()))) => Outcome::Passed,
        Ok(Ok(Err(message))) => Outcome::Failed(message),
        Ok(Err(payload)) => Outcome::Failed(format!(
            "test panicked: {}",
            super::report::panic_message(&*payload)
        )),
        Err(e) => Outcome::Failed(format!("start the test's thread: {e}")),
    }
}

/// Writes the token and `outcome` after everything the test printed; `false` when the
/// runner is gone.
fn report(token: &str, outcome: &Outcome) -> bool {
    let _ = std::io::stderr().flush();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.flush();
    let line = serde_json::to_string(outcome).unwrap_or_else(|_| "\"passed\"".to_string());
    // Its own line, even after output without a newline at its end.
    writeln!(stdout, "{token}{line}").is_ok() && stdout.flush().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::case::{Source, TestFuture, test_case};
    use crate::testing::topology::Topology;

    const SLEEPER: Source = Source {
        path: "/virtual/lease.yaml",
        text: "services:\n  s:\n    target:\n      process: { binary: /bin/sleep, args: [\"300\"] }\n",
    };

    fn nothing(_: &Topology) -> TestFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    #[test]
    fn a_workers_lease_is_kept_between_tests_and_asks_how_the_copy_is() {
        let case = test_case("lease", SLEEPER, nothing);
        let base = std::env::temp_dir();
        // The runner's copy, served on a socket as `Workers::new` serves it.
        let owner = Arc::new(Shared::new(case, base.clone(), Origin::Here));
        owner.expect_test();
        let dir = crate::orchestrator::create_run_dir().unwrap();
        let socket = dir.path().join(owner.socket_name());
        serve(UnixListener::bind(&socket).unwrap(), owner.clone());
        let lessee = Shared::new(case, base, Origin::Runner(socket));

        let first = lessee.acquire().unwrap();
        lessee.release();
        // The runner's copy changes between the worker's tests: its service stops.
        let running = owner.acquire().unwrap();
        smol::block_on(running.stop("s")).unwrap();
        let second = lessee.acquire().unwrap();
        lessee.release();
        // The same lease for the worker's next test, not a new connection, and it still
        // answers: the next test asks again, after the stop has finished.
        assert!(first.is_same_copy(&second));
        assert!(second.refresh_lease().is_ok());
        assert_eq!(second.services().len(), 1);
        owner.release();
        drop((first, second));
    }
}
